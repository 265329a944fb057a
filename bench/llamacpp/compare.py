"""Comparing logits: KL divergence per position, top-1 agreement, and reading our logits file."""
import numpy as np

from hf_to_gguf import SafetensorsFile


def read_our_logits(path):
    """The "logits" tensor (F32 [batch, seq, vocab]) that `mistral logits` writes."""
    st = SafetensorsFile(path)
    if st.dtype("logits") != "F32":
        raise ValueError(f"{path}: logits are {st.dtype('logits')}, expected F32")
    return np.array(st.array("logits"))


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def kl_stats(p_logits, q_logits):
    """KL(P || Q) in nats at every position (P, Q the softmax of the logits over the last axis),
    its mean / max / 99th percentile, and how often the argmax tokens agree."""
    p_logits = np.asarray(p_logits).reshape(-1, np.shape(p_logits)[-1])
    q_logits = np.asarray(q_logits).reshape(-1, np.shape(q_logits)[-1])
    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    return {"positions": int(kl.size), "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
            "kl_p99": float(np.percentile(kl, 99)),
            "top1": float((p_logits.argmax(-1) == q_logits.argmax(-1)).mean())}
