"""Test setup: 8 simulated CPU devices (set before jax is imported), a
persistent compilation cache, and hypothesis profiles."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
    # Tests compile hundreds of small programs: cheaper LLVM passes roughly halve CPU compile time.
    + " --xla_llvm_disable_expensive_passes=true"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

_CACHE = pathlib.Path(os.environ.get("RLZOO_TEST_CACHE", pathlib.Path(__file__).parent.parent / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# Implicit rank promotion ([B] * [B, T]) is a classic silent shape bug: make it an error in tests.
jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile(
    "default", max_examples=15, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
