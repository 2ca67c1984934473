"""Scratch timing of the DiT condition paths (BUILD_NOTES, issue 15): forward+backward, demo DiT size."""
import time, jax, jax.numpy as jnp, numpy as np
from ldlm_jax.models.dit import DiT
B,L,D,H=16,32,64,384
res={}
fns={}
for cond in ('', 'cross_attention', 'in_context'):
  m=DiT(latent_dim=D,width=192,num_layers=4,num_heads=4,condition=cond)
  z=jnp.ones((B,L,D)); t=jnp.full((B,),.5)
  c={'features':jnp.ones((B,L,H)),'mask':jnp.arange(L)[None].repeat(B,0)<10} if cond else None
  args=(z,t,z)+((c,) if cond else ())
  p=m.init(jax.random.PRNGKey(0),*args)['params']
  f=jax.jit(jax.value_and_grad(lambda p: jnp.mean(m.apply({'params':p},*args)**2)))
  f(p)[0].block_until_ready()
  fns[cond]=(f,p); res[cond]=[]
for r in range(5):
  for cond,(f,p) in fns.items():
    t0=time.perf_counter()
    for _ in range(10): out=f(p)
    jax.block_until_ready(out); res[cond].append((time.perf_counter()-t0)/10)
for k,v in res.items(): print(repr(k), 'median ms/fwd+bwd', round(1000*np.median(v),1), 'params', sum(x.size for x in jax.tree.leaves(fns[k][1])))
