"""What tests and benchmarks run the project on, kept out of the packages they exercise: a tiny random
StableLM 2 export (`harness.tiny_export`) and the real server started on a model (`harness.server`)."""
