import os
import sys

# Test helpers (cpu_cache, tiny_model) live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))
