"""Pure functions on strings: cleaning, readability, toxicity scoring, similarity."""
