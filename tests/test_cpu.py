"""CPU runtime settings: a bounded OpenMP spin-wait set before torch loads, and oneDNN's
primitive cache bounded before the first matmul; the user's own choices stand."""

import os
import subprocess
import sys

from nmt_bert.cpu import PRIMITIVE_CACHE, SPIN_COUNT, bound_kernel_cache, share_cores_politely


def test_a_bounded_spin_wait_unless_the_user_chose_one():
    env = {}
    share_cores_politely(env)
    assert env == {"GOMP_SPINCOUNT": str(SPIN_COUNT)}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        env = dict(chosen)
        share_cores_politely(env)
        assert env == chosen  # the user's choice stands


def fresh_python(code: str, unset: tuple[str, ...]) -> list[str]:
    """What `code` prints, split, in a new interpreter whose environment lacks `unset`."""
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True).stdout.split()


def test_the_command_sets_it_before_torch_loads():
    out = fresh_python("import os, sys; import nmt_bert.cli; "
                       "print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)",
                       unset=("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"))
    assert out == [str(SPIN_COUNT), "False"]


def test_a_bounded_primitive_cache_unless_the_user_sized_it():
    env = {}
    bound_kernel_cache(env)
    assert env == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(PRIMITIVE_CACHE)}
    for chosen in ({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"},
                   {"DNNL_PRIMITIVE_CACHE_CAPACITY": "0"}):
        env = dict(chosen)
        bound_kernel_cache(env)
        assert env == chosen


def test_every_model_path_bounds_it_before_running():
    # devices is imported by the model, the trainer and the decoders alike
    out = fresh_python("import os; import nmt_bert.model.seq2seq; "
                       "print(os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY'))",
                       unset=("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY"))
    assert out == [str(PRIMITIVE_CACHE)]
