"""Contrast sentences: hateful claims, and the same claims negated, refuted or reported.

Embedding classifiers score "It is false that <group> are subhuman." much like the hateful
claim itself, because the hateful words dominate the sentence embedding; HateCheck
(Röttger et al., ACL 2021) lists negated hate and counter-speech among the functionalities
such models fail. None of the labelled corpora teaches the difference, so the build adds a
small generated corpus of minimal pairs: each hateful predicate appears in hateful frames
(label 1) and in negating, refuting or reporting frames (label 0), for the 13 target groups
of ToxiGen (Hartvigsen et al., 2022), and in the hateful frames about targets that are not
groups of people (label 0).

Written for this project. The predicates and frames are deliberately different from the
hand-written functional tests in ``tests/safety/fixtures`` (which stay an independent check),
and ``group`` is the predicate, so a predicate's sentences never straddle train and test.
"""

from __future__ import annotations

from simplesafe.safety.corpora import LabelledText

GROUPS = ["Asian people", "Black people", "Chinese people", "Jewish people", "Latino people", "LGBTQ people",
          "Mexican people", "Middle Eastern people", "Muslims", "Native Americans", "people with disabilities",
          "women", "immigrants"]

# Hateful predicates without swear words (derogation, dehumanisation, exclusion).
PREDICATES = [
    "are a plague on this country",
    "are less than human",
    "ruin every place they move to",
    "are born liars",
    "cannot be trusted around children",
    "are inferior to the rest of us",
    "do not belong in this country",
    "are a cancer on society",
    "make the world worse just by existing",
    "are lazy and useless",
    "are dangerous and should be feared",
    "should be banned from public life",
    "are subhuman",
    "are a threat to our way of life",
    "should be sent away for good",
    "are too primitive to live among us",
]

# Targets that are not protected groups (HateCheck's "abuse against non-protected targets"):
# the same predicates about them are rude or silly but not hate, which keeps the model from
# learning that any blunt generalisation about a plural noun is hateful.
OTHER_TARGETS = ["mosquitoes", "cockroaches", "traffic jams", "spam emails", "these old printers", "parking tickets",
                 "weeds in the garden", "Monday mornings", "pop-up adverts", "slow elevators"]

HATEFUL_FRAMES = [
    "{P} {pred}.",
    "Everyone knows {p} {pred}.",
    "I truly believe that {p} {pred}.",
    "Let's be honest, {p} {pred}.",
]

BENIGN_FRAMES = [
    "It is false that {p} {pred}.",
    "I do not believe that {p} {pred}.",
    "Anyone who says {p} {pred} is spreading hate.",
    "We must stand up to people who claim that {p} {pred}.",
    "The idea that {p} {pred} is an old and harmful myth.",
    "My teacher explained why it is wrong to say {p} {pred}.",
]


def contrast_rows() -> list[LabelledText]:
    """All minimal pairs, grouped by predicate.

    Per predicate: each protected group in the hateful frames (label 1) and in the negating
    or refuting frames (label 0), and each non-protected target in the hateful frames (label 0).
    """
    out = []
    for k, pred in enumerate(PREDICATES):
        cases = [(g, 1, HATEFUL_FRAMES) for g in GROUPS] + [(g, 0, BENIGN_FRAMES) for g in GROUPS]
        cases += [(t, 0, HATEFUL_FRAMES) for t in OTHER_TARGETS]
        for target, label, frames in cases:
            fill = {"p": target, "P": target[0].upper() + target[1:], "pred": pred}
            kind = "other" if target in OTHER_TARGETS else label
            for j, frame in enumerate(frames):
                out.append(LabelledText(frame.format(**fill), label, "contrast", f"contrast:{k}:{target}:{kind}:{j}",
                                        f"contrast:{k}"))
    return out
