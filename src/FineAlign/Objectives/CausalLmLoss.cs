using FineAlign.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Objectives;

/// <summary>
/// Masked next-token cross-entropy and per-token log-probabilities. Position t of the logits
/// predicts token t+1, so everything here is shifted by one: logits[:, :-1] scores ids[:, 1:],
/// and the loss mask is read as mask[:, 1:] (mask[t] = "token t is a target").
/// DPO/PPO reuse <see cref="TokenLogProbs"/> and <see cref="SequenceLogProbs"/>.
/// </summary>
public static class CausalLmLoss
{
    /// <summary>log p(ids[:, t+1] | ids[:, ..t]) for every position, [B, T-1] (fp32): <see cref="Models.SequenceLogProbs.PerToken"/>.</summary>
    public static Tensor TokenLogProbs(Tensor logits, Tensor inputIds) => Models.SequenceLogProbs.PerToken(logits, inputIds);

    /// <summary>The loss mask shifted to the prediction positions: mask[:, 1:] as float, [B, T-1].</summary>
    public static Tensor TargetMask(Tensor lossMask) => Models.SequenceLogProbs.TargetMask(lossMask);

    /// <summary>Sum over target tokens of <paramref name="tokenValues"/> [B, T-1], per sequence: [B].</summary>
    public static Tensor MaskedSum(Tensor tokenValues, Tensor lossMask) => Models.SequenceLogProbs.MaskedSum(tokenValues, lossMask);

    /// <summary>Sum of target-token log-probs per sequence, [B] (the log-likelihood DPO compares).</summary>
    public static Tensor SequenceLogProbs(Tensor logits, Tensor inputIds, Tensor lossMask) => Models.SequenceLogProbs.Sum(logits, inputIds, lossMask);

    /// <summary>Number of target tokens (mask[:, 1:] true) in the batch.</summary>
    public static long CountTargets(Tensor lossMask)
    {
        using var scope = NewDisposeScope();
        return lossMask[.., 1..].to(int64).sum().item<long>();
    }

    /// <summary>
    /// Mean negative log-likelihood over target tokens only (scalar). Padding and prompt tokens
    /// contribute nothing. A batch without any target gives 0 (not NaN) and no gradient signal.
    /// </summary>
    public static Tensor Loss(Tensor logits, Tensor inputIds, Tensor lossMask)
    {
        Models.SequenceLogProbs.CheckShapes(logits, inputIds, lossMask);
        using var scope = NewDisposeScope();
        var mask = TargetMask(lossMask);
        var nllSum = (TokenLogProbs(logits, inputIds).neg() * mask).sum();
        return (nllSum / mask.sum().clamp_min(1.0)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// As <see cref="TokenLogProbs(Tensor, Tensor)"/> from the model itself, through <see cref="ChunkedLmHead"/>: the
    /// LM head runs a chunk of positions at a time and only where <paramref name="lossMask"/>[:, 1:] is true (0
    /// elsewhere), so no [B, T, V] logits exist. Every trainer's log-prob and loss path goes through here.
    /// </summary>
    public static Tensor TokenLogProbs(CausalLM model, Tensor inputIds, Tensor? attentionMask, Tensor? lossMask, double temperature = 1.0)
        => ChunkedLmHead.FromIds(model, inputIds, attentionMask, lossMask, temperature);

    /// <summary>Sum of target-token log-probs per sequence, [B], without materialising the logits.</summary>
    public static Tensor SequenceLogProbs(CausalLM model, Tensor inputIds, Tensor? attentionMask, Tensor lossMask)
    {
        using var scope = NewDisposeScope();
        var logp = TokenLogProbs(model, inputIds, attentionMask, lossMask);
        return MaskedSum(logp, lossMask.to(logp.device)).MoveToOuterDisposeScope();
    }

    /// <summary>Mean negative log-likelihood over target tokens (as <see cref="Loss(Tensor, Tensor, Tensor)"/>), chunked.</summary>
    public static Tensor Loss(CausalLM model, Tensor inputIds, Tensor? attentionMask, Tensor lossMask)
    {
        using var scope = NewDisposeScope();
        var logp = TokenLogProbs(model, inputIds, attentionMask, lossMask);
        var mask = TargetMask(lossMask).to(logp.device);
        var nllSum = (logp.neg() * mask).sum();
        return (nllSum / mask.sum().clamp_min(1.0)).MoveToOuterDisposeScope();
    }
}
