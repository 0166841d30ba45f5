"""SFT training of Qwen2-VL / Qwen2.5-VL on grounded chains (docs/sft.md): data pipeline and trainer."""
