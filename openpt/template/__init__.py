"""Template language: parsing, binding to a tokenizer, encoding and soft tokens."""
