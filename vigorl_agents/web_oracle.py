"""A scripted MiniWoB++ oracle: a plumbing check, not a model and not a baseline (docs/web.md#the-oracle).

**It reads the DOM**: it decides from the task instruction and the `[id] [role] [text]` listing of
the marked elements, which the env extracts from the page's DOM (texts, labels, checked states and
field values), and never looks at the screenshot. It knows how each curated task is phrased
(`vigorl_env.web.miniwob.CURATED_TASKS`) and answers with one action of the web-action grammar
per turn, through the same conversation a model gets, so a run of it through the evaluation
runner proves the plumbing end to end: listing, ids, action execution in the page, the task's
own reward, the episode loop. Its think blocks name no `(x, y)` point (it does not look at the
image), so under the grounded variant it earns no format credit: its accuracy is the number to
read, its reward is not.

Each turn is decided from the current page state alone (which boxes are checked, which fields
hold which value), so a wrong or lost action is repaired on the next turn instead of derailing a
fixed plan. An instruction it does not know gets `stop []`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vigorl_agents.policy import Completion, Conversation, RulePolicy, SamplingParams

_LINE = re.compile(r"^\[(\d+)\] \[([^\]]*)\] \[(.*)\]$")


@dataclass(frozen=True)
class Element:
    id: int
    role: str
    text: str

    @property
    def label(self) -> str:
        """The text without the state suffixes the listing adds."""
        t = re.sub(r' ?value: ".*"$', "", self.text)
        return t.removesuffix(" (checked)").strip()

    @property
    def checked(self) -> bool:
        return self.text.endswith("(checked)")

    @property
    def value(self) -> str | None:
        m = re.search(r'value: "(.*)"$', self.text)
        return m.group(1) if m else None


def parse_observation(text: str) -> tuple[str, list[Element]]:
    """(objective, elements) of a MiniWoB observation text."""
    m = re.search(r"OBJECTIVE: (.*?)\nPREVIOUS ACTIONS:", text, re.DOTALL)
    objective = m.group(1).strip() if m else ""
    elements = []
    if "INTERACTIVE ELEMENTS:\n" in text:
        for line in text.split("INTERACTIVE ELEMENTS:\n", 1)[1].splitlines():
            if lm := _LINE.match(line.strip()):
                elements.append(Element(int(lm.group(1)), lm.group(2), lm.group(3)))
    return objective, elements


def _first(elements: list[Element], role: str | None = None, text: str | None = None,
           ci: bool = False) -> Element | None:  # fmt: skip
    for e in elements:
        if role is not None and e.role != role:
            continue
        if text is not None:
            a, b = (e.label.lower(), text.lower()) if ci else (e.label, text)
            if a != b:
                continue
        return e
    return None


def _submit(elements: list[Element], name: str = "submit") -> str | None:
    e = _first(elements, "button", name, ci=True)
    return f"click [{e.id}]" if e else None


def _fill(field: Element | None, want: str) -> str | None:
    """`type` into `field` unless it already holds `want`."""
    if field is None or field.value == want:
        return None
    return f"type [{field.id}] [{want}] [press_enter_after=0]"


def decide(objective: str, elements: list[Element]) -> tuple[str, str]:
    """(reason, action) for one turn of a curated task."""
    textboxes = [e for e in elements if e.role == "textbox"]
    if objective == "Click the button.":
        e = _first(elements, "button")
        return "the only button", f"click [{e.id}]" if e else "stop []"
    if m := re.fullmatch(r'Click on the "(.*)" button\.', objective):
        e = _first(elements, "button", m.group(1))
        return f'the button reading "{m.group(1)}"', f"click [{e.id}]" if e else "stop []"
    if m := re.fullmatch(r'Click on the link "(.*)"\.', objective):
        e = _first(elements, None, m.group(1))
        return f'the link "{m.group(1)}"', f"click [{e.id}]" if e else "stop []"
    if m := re.fullmatch(r"Click on (Tab #\d+)\.", objective):
        e = _first(elements, "tab", m.group(1))
        return f"the tab {m.group(1)}", f"click [{e.id}]" if e else "stop []"
    if re.fullmatch(r'Close the dialog box by clicking the "x"\.', objective):
        e = _first(elements, "button", "close", ci=True)
        return "the dialog's close button", f"click [{e.id}]" if e else "stop []"
    if objective == "Focus into the textbox.":
        return "the text box", f"click [{textboxes[0].id}]" if textboxes else "stop []"
    if m := re.fullmatch(r"Select (.*) from the list and click Submit\.", objective):
        lists = [e for e in elements if e.role == "combobox"]
        want = m.group(1)
        if lists and f'selected: "{want}"' not in lists[0].text:
            return (
                f"the list, option {want}",
                f"type [{lists[0].id}] [{want}] [press_enter_after=0]",
            )
        return "the option is selected; submit", _submit(elements) or "stop []"
    if m := re.fullmatch(r"Select (.*) and click Submit\.", objective):
        names = m.group(1)
        if any(e.role == "radio" for e in elements):  # click-option: one name
            e = _first(elements, "radio", names)
            if e is not None and not e.checked:
                return f"the option {names}", f"click [{e.id}]"
            return "the option is selected; submit", _submit(elements) or "stop []"
        want = (
            set() if names == "nothing" else {n.strip() for n in re.split(r",\s*|\s+and\s+", names)}
        )
        for e in elements:
            if e.role == "checkbox" and e.checked != (e.label in want):
                return f"the box {e.label} is in the wrong state", f"click [{e.id}]"
        return "every box is right; submit", _submit(elements) or "stop []"
    if m := re.fullmatch(r'Enter "(.*)" into the text field and press Submit\.', objective):
        act = _fill(textboxes[0] if textboxes else None, m.group(1))
        return "the text field", act or _submit(elements) or "stop []"
    if m := re.fullmatch(
        r'Enter the password "(.*)" into both text fields and press submit\.', objective
    ):
        for tb in textboxes:
            if act := _fill(tb, m.group(1)):
                return "a password field", act
        return "both fields are filled; submit", _submit(elements) or "stop []"
    if m := re.fullmatch(
        r'Enter the username "(.*)" and the password "(.*)" into the text fields and press login\.',
        objective,
    ):
        user = _first(textboxes, None, "Username", ci=True)
        pwd = _first(textboxes, None, "Password", ci=True)
        act = _fill(user, m.group(1)) or _fill(pwd, m.group(2))
        return "the login form", act or _submit(elements, "login") or "stop []"
    return "an instruction this oracle does not know", "stop []"


@dataclass
class MiniWoBOracle(RulePolicy):
    """The scripted MiniWoB++ oracle (reads the DOM-derived element listing; see the module doc)."""

    name: str = "miniwob_oracle_dom"

    def complete(self, conv: Conversation, params: SamplingParams) -> list[Completion]:
        user = [m for m in conv.messages if m.role == "user"][-1]
        objective, elements = parse_observation(user.text)
        reason, action = decide(objective, elements)
        text = (
            f"<think>\nFrom the element listing (read from the page's DOM): {reason}.\n</think>\n"
            f"<answer> {action} </answer>"
        )
        return [Completion(text, "stop", "</answer>") for _ in range(params.n)]
