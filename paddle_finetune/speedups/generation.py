"""Generation (`fast_beam_search`): the cross-attention cache stays in place when beams are reordered, and
BeamSearchScorer's bookkeeping runs on numpy copies.

Imports: the standard library and numpy; paddle and paddlenlp inside the functions; of the project
`speedups.versions`.
"""
import contextlib

import numpy as np

from paddle_finetune.speedups.versions import _supported


# ----------------------------------------------------------------------------
# beam search (paddlenlp 2.8's generation utils)
# ----------------------------------------------------------------------------
def reorder_beam_cache(cache, beam_idx):
    """Beam-search cache reorder that moves only the self-attention keys/values.

    paddlenlp's reorder_cache index_selects every cached tensor, including the cross-attention
    StaticCache (batch*beams x heads x source_len x head_dim per layer). Beams only move within their
    own example, and all beams of an example share the same encoder keys and values, so the static
    cache can stay as it is (Hugging Face's BART does the same). That was 45% of beam-4 generation time.
    The ids are unchanged; a test checks this.
    """
    import paddle
    from paddle.nn import MultiHeadAttention

    return [
        tuple(type(c)(*(paddle.index_select(t, beam_idx) for t in c)) if isinstance(c, MultiHeadAttention.Cache) else c for c in layer)
        for layer in cache
    ]


def beam_scorer_process(self, input_ids, next_scores, next_tokens, next_indices, origin_len=0, pad_token_id=None, eos_token_id=None):
    """paddlenlp's BeamSearchScorer.process with its bookkeeping on numpy copies.

    The original reads every candidate with a tensor .item() and writes every kept one with a tensor
    __setitem__: 18% of beam-4 generation time on CPU, and a device sync per candidate on GPU.
    This is the same loop, in the same order and on the same float32 values, over three .numpy() copies.
    """
    import paddle

    if next_scores.dtype not in (paddle.float32, paddle.float64):  # bf16 has no numpy view: paddlenlp's own loop
        return _PADDLENLP_BEAM_PROCESS(self, input_ids, next_scores, next_tokens, next_indices, origin_len, pad_token_id, eos_token_id)
    cur_len = input_ids.shape[-1]
    batch_size, group = len(self._beam_hyps), self.group_size
    scores, tokens, indices = next_scores.numpy(), next_tokens.numpy(), next_indices.numpy()
    done = self._done.numpy().copy()
    beam_scores = np.zeros([batch_size, group], scores.dtype)
    beam_tokens = np.zeros([batch_size, group], tokens.dtype)
    beam_indices = np.zeros([batch_size, group], indices.dtype)
    for batch_idx, beam_hyp in enumerate(self._beam_hyps):
        if done[batch_idx] == 1:
            if len(beam_hyp) < self.num_beams or eos_token_id is None or pad_token_id is None:
                raise ValueError(f"beam search: example {batch_idx} is done with {len(beam_hyp)} of {self.num_beams} beams "
                                 "or without eos/pad ids")
            beam_tokens[batch_idx, :] = pad_token_id
            continue
        beam_idx = 0
        candidates = zip(tokens[batch_idx].tolist(), scores[batch_idx].tolist(), indices[batch_idx].tolist())
        for rank, (token, score, index) in enumerate(candidates):
            batch_beam_idx = batch_idx * group + index
            if eos_token_id is not None and token == eos_token_id:
                if rank >= group:  # an eos outside the top num_beams candidates is not a finished hypothesis
                    continue
                beam_hyp.add(input_ids[batch_beam_idx].clone(), score, origin_len)
            else:
                beam_scores[batch_idx, beam_idx] = score
                beam_tokens[batch_idx, beam_idx] = token
                beam_indices[batch_idx, beam_idx] = batch_beam_idx
                beam_idx += 1
            if beam_idx == group:
                break
        if beam_idx < group:
            raise ValueError(f"At most {group} tokens in next_tokens[{batch_idx}] can be equal to eos_token_id {eos_token_id}")
        if beam_hyp.is_done(float(scores[batch_idx].max()), cur_len, origin_len):
            done[batch_idx] = 1
    self._done = paddle.to_tensor(done)
    return {"next_beam_scores": paddle.to_tensor(beam_scores.reshape([-1])),
            "next_beam_tokens": paddle.to_tensor(beam_tokens.reshape([-1])),
            "next_beam_indices": paddle.to_tensor(beam_indices.reshape([-1]))}


_PADDLENLP_BEAM_PROCESS = None


@contextlib.contextmanager
def fast_beam_search(model, enabled=True):
    """While generating: the self-attention-only cache reorder and the numpy beam bookkeeping.

    With enabled=False, or a paddlenlp these were not written for, paddlenlp's own code runs.
    """
    global _PADDLENLP_BEAM_PROCESS
    if not enabled or not _supported("paddlenlp"):
        yield
        return
    from paddlenlp.generation.utils import BeamSearchScorer

    if _PADDLENLP_BEAM_PROCESS is None:
        _PADDLENLP_BEAM_PROCESS = BeamSearchScorer.process
    last = []  # paddlenlp reorders the same cache twice a step (as "cache" and as "past_key_values")

    def reorder_once(cache, beam_idx):
        if not (last and last[0] is cache and last[1] is beam_idx):
            last[:] = [cache, beam_idx, reorder_beam_cache(cache, beam_idx)]
        return last[2]

    model.reorder_cache = reorder_once
    BeamSearchScorer.process = beam_scorer_process
    try:
        yield
    finally:
        BeamSearchScorer.process = _PADDLENLP_BEAM_PROCESS
        del model.reorder_cache
