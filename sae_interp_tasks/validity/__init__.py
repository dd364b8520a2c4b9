"""Evidence that a score can mean something: SAEs with planted, known meanings (`known_answers`) and
the check each LLM scorer takes on known answers before it scores (`scorer_check`)."""
