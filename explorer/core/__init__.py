"""Qt-free core: model files, the llama.cpp engine, sampling, the token tree, JSON rollout sets, rewards."""
