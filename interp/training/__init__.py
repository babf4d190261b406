"""Training: task models with exact resume (`task`), language models on text (`text`)."""
