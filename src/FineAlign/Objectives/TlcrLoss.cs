using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FineAlign.Objectives;

/// <summary>Which side of a revision pair a discriminator sequence is.</summary>
public enum TlcrSide
{
    /// <summary>The response before the revision (its edited tokens are negative).</summary>
    Original = 0,
    /// <summary>The revised response (its edited tokens are positive).</summary>
    Revised = 1,
    /// <summary>Labels from elsewhere (e.g. annotated spans): a side of its own.</summary>
    Other = 2,
}

/// <summary>
/// TLCR discriminator loss (Yoon et al. 2024, arXiv 2407.16574, §3.2; as the reference code EsYoon7/RLHF-TLCR computes it):
/// soft-target cross-entropy per token — positive target [0, 1], negative [1, 0], neutral [½, ½] — averaged over each
/// sequence's response tokens, averaged over the sequences of one side, and the sides' averages summed:
/// L = mean_revised(CE) + mean_original(CE). Each side is averaged on its own, so an unbalanced batch does not reweight
/// them; a side absent from the batch adds 0.
/// </summary>
public static class TlcrLoss
{
    /// <param name="scores">Discriminator logits [B, L, 2] (index 1 = positive).</param>
    /// <param name="targets">P(positive) targets [B, L]: 1, 0 or ½.</param>
    /// <param name="weights">Per-token loss weight [B, L]: 1 on labelled response tokens, the neutral weight on neutral ones, 0 elsewhere.</param>
    /// <param name="sides">Each row's <see cref="TlcrSide"/> [B] (int64).</param>
    public static Tensor Compute(Tensor scores, Tensor targets, Tensor weights, Tensor sides)
    {
        if (scores.dim() != 3 || scores.shape[2] != 2 || !targets.shape.SequenceEqual(scores.shape[..2]) || !weights.shape.SequenceEqual(targets.shape))
            throw new FineAlignException($"TLCR loss needs scores [B, L, 2] and targets/weights [B, L]; got [{Masked.Shape(scores)}], [{string.Join(", ", targets.shape)}], [{string.Join(", ", weights.shape)}]");
        if (sides.dim() != 1 || sides.shape[0] != scores.shape[0])
            throw new FineAlignException($"TLCR sides must be [batch] = [{scores.shape[0]}], got [{string.Join(", ", sides.shape)}]");
        using var scope = NewDisposeScope();
        var logp = F.log_softmax(scores.to(float32), -1);
        var ce = -(targets * logp.select(-1, 1) + (1 - targets) * logp.select(-1, 0)) * weights;
        var rowWeight = weights.sum(1);
        var perSeq = ce.sum(1) / rowWeight.clamp_min(1e-12);
        var hasTokens = rowWeight.gt(0);
        var loss = zeros(1, dtype: float32).squeeze();
        foreach (var side in Enum.GetValues<TlcrSide>())
        {
            var rows = sides.eq((long)side).logical_and(hasTokens).to(float32);
            loss = loss + (perSeq * rows).sum() / rows.sum().clamp_min(1);
        }
        return loss.MoveToOuterDisposeScope();
    }
}
