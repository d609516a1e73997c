"""Reference implementations the benchmark measures payrelay against, written as a team would."""
