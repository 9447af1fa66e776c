"""Teacher-student distillation: loss terms, students made from teacher layers, word-level alignment."""
