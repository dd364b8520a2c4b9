"""Reading results files and reporting on them: `sae-interp leaderboard` and `sae-interp compare`.

Nothing here imports torch or lm_eval: the commands start in a fraction of a second."""
