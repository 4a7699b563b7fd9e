"""Test infrastructure that ships so tests and benchmarks can import it: a fault-injecting OpenAI-compatible
server (`fault_server`), load-test helpers (`soak`) and a vLLM launcher with a tiny Qwen3 builder (`vllm_server`).
Nothing in the library imports it."""
