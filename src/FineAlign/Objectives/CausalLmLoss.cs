using FineAlign.Models;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FineAlign.Objectives;

/// <summary>
/// Masked next-token cross-entropy and per-token log-probabilities. Position t of the logits
/// predicts token t+1, so everything here is shifted by one: logits[:, :-1] scores ids[:, 1:],
/// and the loss mask is read as mask[:, 1:] (mask[t] = "token t is a target").
/// DPO/PPO reuse <see cref="TokenLogProbs"/> and <see cref="SequenceLogProbs"/>.
/// </summary>
public static class CausalLmLoss
{
    /// <summary>
    /// log p(ids[:, t+1] | ids[:, ..t]) for every position, [B, T-1] (fp32). Computed with
    /// cross_entropy (a fused log_softmax + gather), so no [B, T, V] log-prob tensor is kept.
    /// </summary>
    public static Tensor TokenLogProbs(Tensor logits, Tensor inputIds)
    {
        CheckShapes(logits, inputIds, null);
        using var scope = NewDisposeScope();
        long b = logits.shape[0], t = logits.shape[1], v = logits.shape[2];
        var pred = logits[.., ..^1, ..].reshape(-1, v).to(float32);
        var target = inputIds[.., 1..].reshape(-1).to(int64);
        var nll = F.cross_entropy(pred, target, reduction: nn.Reduction.None);
        return nll.neg().view(b, t - 1).MoveToOuterDisposeScope();
    }

    /// <summary>The loss mask shifted to the prediction positions: mask[:, 1:] as float, [B, T-1].</summary>
    public static Tensor TargetMask(Tensor lossMask) => lossMask[.., 1..].to(float32);

    /// <summary>Sum over target tokens of <paramref name="tokenValues"/> [B, T-1], per sequence: [B].</summary>
    public static Tensor MaskedSum(Tensor tokenValues, Tensor lossMask)
    {
        using var scope = NewDisposeScope();
        return (tokenValues * TargetMask(lossMask)).sum(1).MoveToOuterDisposeScope();
    }

    /// <summary>Sum of target-token log-probs per sequence, [B] (the log-likelihood DPO compares).</summary>
    public static Tensor SequenceLogProbs(Tensor logits, Tensor inputIds, Tensor lossMask)
    {
        CheckShapes(logits, inputIds, lossMask);
        using var scope = NewDisposeScope();
        return MaskedSum(TokenLogProbs(logits, inputIds), lossMask).MoveToOuterDisposeScope();
    }

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
        CheckShapes(logits, inputIds, lossMask);
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
    {
        using var scope = NewDisposeScope();
        var hidden = model.ForwardHidden(inputIds, attentionMask);
        return ChunkedLmHead.TokenLogProbs(model, hidden, inputIds, lossMask, temperature).MoveToOuterDisposeScope();
    }

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

    private static void CheckShapes(Tensor logits, Tensor inputIds, Tensor? lossMask)
    {
        if (logits.dim() != 3)
            throw new FineAlignException($"logits must be [batch, time, vocab], got [{string.Join(", ", logits.shape)}]");
        if (inputIds.dim() != 2 || inputIds.shape[0] != logits.shape[0] || inputIds.shape[1] != logits.shape[1])
            throw new FineAlignException($"input ids [{string.Join(", ", inputIds.shape)}] do not match logits [{string.Join(", ", logits.shape)}]");
        if (lossMask is not null && (lossMask.dim() != 2 || lossMask.shape[0] != inputIds.shape[0] || lossMask.shape[1] != inputIds.shape[1]))
            throw new FineAlignException($"loss mask [{string.Join(", ", lossMask.shape)}] does not match input ids [{string.Join(", ", inputIds.shape)}]");
        if (logits.shape[1] < 2)
            throw new FineAlignException("a causal LM loss needs sequences of at least 2 tokens");
    }
}
