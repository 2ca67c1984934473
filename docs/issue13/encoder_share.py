"""Share of the demo train step spent in the frozen encoder's forward pass.
Times jit(features) and the jitted train step alternately (same load for both)."""
import time, sys
import jax, jax.numpy as jnp, numpy as np
from ldlm_jax.config import validate
from ldlm_jax.encoders.registry import load_frozen_encoder
from ldlm_jax.models.ldlm import LDLM
from ldlm_jax.training import sharding as sharding_lib, state as state_lib, step as step_lib
sys.path.insert(0, 'configs'); import demo
c = demo.get_config(); validate(c)
enc = load_frozen_encoder(c.encoder.name, c.encoder.path, c.encoder.dtype).on_device()
model = LDLM(c, enc)
H = enc.hidden_size if hasattr(enc, 'hidden_size') else 384
frozen = model.frozen_inputs(enc.params, np.zeros(H, np.float32), np.ones(H, np.float32))
mesh = sharding_lib.make_mesh(c)
state, _ = state_lib.create_sharded_train_state(model, c, mesh, jax.random.PRNGKey(0))
step_fn = step_lib.compile_train_step(model, c, mesh, jax.eval_shape(lambda: state), frozen)
tokens = jax.device_put(jnp.asarray(np.random.RandomState(0).randint(1000, 20000, (16, 32)), jnp.int32), sharding_lib.batch_sharding(mesh))
feat = jax.jit(lambda p, t: model.features(frozen, p, t))
params = state.params
jax.block_until_ready(feat(params, tokens))
metrics = jax.device_put(step_lib.empty_train_metrics(), sharding_lib.replicated(mesh))
state, metrics = step_fn(state, frozen, tokens, metrics); jax.block_until_ready(state)
tf, ts = [], []
for _ in range(10):
  t0 = time.perf_counter()
  for _ in range(10): out = feat(params, tokens)
  jax.block_until_ready(out); tf.append((time.perf_counter() - t0) / 10)
  t0 = time.perf_counter()
  for _ in range(10): state, metrics = step_fn(state, frozen, tokens, metrics)
  jax.block_until_ready(state); ts.append((time.perf_counter() - t0) / 10)
tf, ts = np.median(tf), np.median(ts)
print(f'encoder forward {tf*1e3:.1f} ms, train step {ts*1e3:.1f} ms, share {tf/ts:.1%} (median of 10 x 10)')
