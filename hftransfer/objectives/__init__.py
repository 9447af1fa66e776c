"""What the loss is: the task's cross-entropy, plus optional regularisers (conservative training)."""
