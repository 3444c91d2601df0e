using FineAlign.Data;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FineAlign.Models;

/// <summary>
/// Per-token and per-sequence log-probabilities of a causal LM. Position t of the logits predicts token t+1, so
/// logits[:, :-1] scores ids[:, 1:] and a loss mask is read as mask[:, 1:] (mask[t] = "token t is a target").
/// The causal-LM loss, DPO, KTO, BCO and the preference evaluation all read log-probs from here.
/// </summary>
public static class SequenceLogProbs
{
    /// <summary>
    /// log p(ids[:, t+1] | ids[:, ..t]) for every position, [B, T-1] (fp32). Computed with
    /// cross_entropy (a fused log_softmax + gather), so no [B, T, V] log-prob tensor is kept.
    /// </summary>
    public static Tensor PerToken(Tensor logits, Tensor inputIds)
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
    public static Tensor Sum(Tensor logits, Tensor inputIds, Tensor lossMask)
    {
        CheckShapes(logits, inputIds, lossMask);
        using var scope = NewDisposeScope();
        return MaskedSum(PerToken(logits, inputIds), lossMask).MoveToOuterDisposeScope();
    }

    /// <summary>log π(completion | prompt) per row of <paramref name="b"/>: the sum over scored, non-padding tokens, [N].</summary>
    public static Tensor Of(CausalLM model, TokenBatch b)
    {
        using var scope = NewDisposeScope();
        var mask = b.LossMask.logical_and(b.AttentionMask.ne(0));
        // Chunked LM head: only target positions, never the [B, T, V] logits (ChunkedLmHead).
        var logp = ChunkedLmHead.FromIds(model, b.InputIds, b.AttentionMask, mask);
        return MaskedSum(logp, mask.to(logp.device)).MoveToOuterDisposeScope();
    }

    /// <summary>As <see cref="Of"/> without gradient (a frozen reference).</summary>
    public static Tensor OfFrozen(CausalLM model, TokenBatch b)
    {
        using var noGrad = no_grad();
        return Of(model, b);
    }

    /// <summary>
    /// Per-token log-probs of each sequence (length n−1 for n tokens), scored in one right-padded batch. Padding sits
    /// after every real token, so with the causal mask no real position sees it; the mask keeps positions right too.
    /// </summary>
    public static float[][] Score(CausalLM model, IReadOnlyList<int[]> sequences)
    {
        int b = sequences.Count, len = sequences.Max(s => s.Length);
        var result = new float[b][];
        if (len < 2) return sequences.Select(_ => Array.Empty<float>()).ToArray();
        var ids = PadRows.Rows(sequences.Select(x => (IReadOnlyList<long>)x.Select(v => (long)v).ToArray()).ToList(), len, 0L);
        var mask = PadRows.Mask(sequences.Select(x => x.Length).ToList(), len, 1L);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var device = model.parameters().First().device;
        var idsT = tensor(ids, [b, len], device: device);
        var maskT = tensor(mask, [b, len], device: device);
        var logits = model.Forward(idsT, maskT);
        var lp = PerToken(logits, idsT).cpu().data<float>().ToArray();
        for (int i = 0; i < b; i++)
            result[i] = lp.AsSpan(i * (len - 1), sequences[i].Length - 1).ToArray();
        return result;
    }

    internal static void CheckShapes(Tensor logits, Tensor inputIds, Tensor? lossMask)
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
