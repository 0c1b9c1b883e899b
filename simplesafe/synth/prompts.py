"""Prompt texts for the synthetic-data generators, each citing the paper it follows.

The wording and the few-shot examples are ours; the structure follows the papers:

- Backtranslation of Simple Wikipedia leads: the project report's exact system message and
  prompt ("Training LLMs on Simple, Safe Text", Sec. 2.1), which it used with GPT-3.5.
- Self-Instruct (Wang et al., 2023, "Self-Instruct: Aligning Language Models with
  Self-Generated Instructions", Sec. 2.2 and App. A): a numbered task list to continue;
  a few-shot yes/no question for "is this a classification task"; input-first instance
  generation for other tasks and output-first (label, then input) for classification.
- Humpback self-curation (Li et al., 2023, "Self-Alignment with Instruction
  Backtranslation", Table 1): a 5-point quality rubric for (instruction, answer) pairs
  that ends with "Score: <n>" on the last line.
"""

from __future__ import annotations

# --- Backtranslation (the report's messages, verbatim: the report specifies them) -------
BACKTRANSLATE_SYSTEM = "You are a helpful assistant that generates questions from text."
BACKTRANSLATE_PROMPT = "Question: X\n\nAnswer: {answer}\n\nWhat kind of question, X, could this be an answer to?\n\nX:"


def backtranslate_messages(answer: str) -> list[dict]:
    return [
        {"role": "system", "content": BACKTRANSLATE_SYSTEM},
        {"role": "user", "content": BACKTRANSLATE_PROMPT.format(answer=answer)},
    ]


# --- Self-Instruct: new instructions -----------------------------------------------------
INSTRUCTION_HEADER = (
    "Come up with a series of tasks. Make them varied: different verbs, topics and formats. "
    "Write each task on its own line as \"Task N: ...\".\n\n"
)


def instruction_prompt(examples: list[str]) -> str:
    lines = [f"Task {i}: {text}" for i, text in enumerate(examples, start=1)]
    return INSTRUCTION_HEADER + "\n".join(lines) + f"\nTask {len(examples) + 1}:"


# --- Self-Instruct: is it a classification task? -------------------------------------------
CLASSIFY_HEADER = (
    "Decide whether each task is a classification task: one whose answer is a label picked "
    "from a small, fixed set of options.\n\n"
)
CLASSIFY_EXAMPLES = [
    ("Tell me whether this movie review is positive or negative.", "Yes"),
    ("Write a short poem about the first snow of winter.", "No"),
    ("Is the following number prime? Answer yes or no.", "Yes"),
    ("Summarise the paragraph below in one sentence.", "No"),
    ("Which of the listed animals is a mammal: shark, dolphin or trout?", "Yes"),
    ("Suggest three names for a new bakery.", "No"),
    ("Label the email as spam or not spam.", "Yes"),
    ("Explain how a bicycle gear works to a ten-year-old.", "No"),
    ("Decide if the two sentences mean the same thing.", "Yes"),
    ("Translate the sentence into French.", "No"),
]


def classify_prompt(instruction: str) -> str:
    shots = "\n\n".join(f"Task: {t}\nIs it classification? {a}" for t, a in CLASSIFY_EXAMPLES)
    return CLASSIFY_HEADER + shots + f"\n\nTask: {instruction}\nIs it classification?"


# --- Self-Instruct: instances, input first (non-classification) ---------------------------
INPUT_FIRST_HEADER = (
    "Write examples for each task. When a task needs an input, give the input first and then "
    "the output; write several examples when you can. When a task needs no input, write the "
    "output directly.\n\n"
)
INPUT_FIRST_SHOTS = """Task: Suggest a healthy snack for someone who is always in a hurry.
Output: A banana with a handful of almonds: it needs no preparation and keeps you full.

Task: Turn the temperature from Celsius into Fahrenheit.
Example 1
Temperature: 20 C
Output: 68 F
Example 2
Temperature: -5 C
Output: 23 F

Task: Find the verbs in the sentence.
Example 1
Sentence: The children ran to the park and played until dark.
Output: ran, played
"""


def input_first_prompt(instruction: str) -> str:
    return INPUT_FIRST_HEADER + INPUT_FIRST_SHOTS + f"\nTask: {instruction}\n"


# --- Self-Instruct: instances, output first (classification) ------------------------------
OUTPUT_FIRST_HEADER = (
    "For each classification task, first write a class label, then an input that belongs to "
    "that label. Cover every label. If the task needs no input, write only the label.\n\n"
)
OUTPUT_FIRST_SHOTS = """Task: Say whether the restaurant review is positive or negative.
Class label: Positive
Review: The soup was hot, the staff were kind and the bill was fair.
Class label: Negative
Review: We waited an hour and the pasta arrived cold.

Task: Is the number even or odd?
Class label: Even
Number: 14
Class label: Odd
Number: 9
"""


def output_first_prompt(instruction: str) -> str:
    return OUTPUT_FIRST_HEADER + OUTPUT_FIRST_SHOTS + f"\nTask: {instruction}\n"


# --- Humpback self-curation rubric (Li et al., 2023, Table 1; our wording) ----------------
CURATION_RUBRIC = """Below is a user's instruction and a candidate answer. Judge how good the answer is as an example of how a helpful AI assistant should reply to that instruction, using this 5-point scale:

1: The answer is incomplete, vague, off-topic or not what was asked; or it reads like a personal story, a forum post, an advertisement or page navigation text.
2: The answer covers most of what was asked but does not address the question directly, for example it only sketches an approach instead of giving the solution.
3: The answer is helpful and covers the basic request, but it is not written as an AI assistant would write it: it reads like an excerpt from a blog, a web page or search results.
4: The answer is written from an AI assistant's point of view, is clearly focused on the instruction, and is complete, clear and well organised; it could be a little more concise or focused.
5: The answer is a perfect assistant reply: focused on the instruction with no irrelevant sentences, expert, well written, logical and easy to follow.

First give a brief reason for your rating. Then write "Score: <rating>" on the last line, where <rating> is 1, 2, 3, 4 or 5.

Instruction: {instruction}

Answer: {output}"""


def curation_prompt(instruction: str, output: str) -> str:
    return CURATION_RUBRIC.format(instruction=instruction, output=output)
