"""Multitask training: one shared encoder, one head per task, single-task batches chosen by a task sampler."""
