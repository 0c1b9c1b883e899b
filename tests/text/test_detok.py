from simplesafe.text.detok import detokenize


def test_ptb_spacing_removed():
    assert detokenize("it lies in the north , with coastline . it 's 5 % ( about ) .") == \
        "it lies in the north, with coastline. it's 5% (about)."


def test_empty_pronunciation_parens_removed():
    assert detokenize("moray ( ; or `` '' ; ; ) is one") == "moray is one"


def test_quotes_rejoined():
    assert detokenize("he said `` hello there '' and left") == 'he said "hello there" and left'
