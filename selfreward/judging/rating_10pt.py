"""Single-answer grading as MT-Bench's judge does it: `Rating: N` with N in 1-10 (`selfreward mt-bench --grade`)."""

from selfreward.judging.scale import Scale

RATING_10PT = Scale("rating_10pt", template="single_grade", label="Rating", lowest=1, highest=10)
