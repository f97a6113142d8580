"""Make sure things happen: scheduled count checks, affirmations and sign-offs."""
