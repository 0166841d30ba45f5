"""SFT training of Qwen2-VL / Qwen2.5-VL on grounded chains (SPEC §10): data pipeline and trainer."""
