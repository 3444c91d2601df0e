using FineAlign.Text;
using System.Security.Cryptography;
using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Objectives;
using static TorchSharp.torch;

namespace FineAlign.Trainers;

/// <summary>
/// B preference pairs as ONE right-padded batch of 2B rows: rows 0..B-1 chosen, rows B..2B-1 rejected, so a
/// single forward scores both (as TRL's concatenated_forward). <see cref="Indices"/> are the pairs' dataset indices.
/// </summary>
public sealed record PairBatch(IReadOnlyList<int> Indices, TokenBatch Tokens, Tensor Margins, Tensor ChosenLengths, Tensor RejectedLengths) : IDisposable
{
    public int Count => Indices.Count;

    public void Dispose()
    {
        Tokens.Dispose(); Margins.Dispose(); ChosenLengths.Dispose(); RejectedLengths.Dispose();
    }
}

/// <summary>
/// B feedback examples; for KTO also <see cref="Mismatched"/>: prompt i with completion i−1 (see
/// <see cref="KtoLoss.MismatchedPairs"/>), scored without gradient for the KL reference point.
/// </summary>
public sealed record FeedbackBatch(IReadOnlyList<int> Indices, TokenBatch Tokens, TokenBatch? Mismatched, Tensor Labels) : IDisposable
{
    public int Count => Indices.Count;

    public void Dispose()
    {
        Tokens.Dispose(); Mismatched?.Dispose(); Labels.Dispose();
    }
}

/// <summary>What the reward-model, DPO, KTO and BCO trainers share: batching, sequence log-probs, frozen references.</summary>
public static class PreferenceBatches
{
    public static PairBatch Pairs(IReadOnlyList<EncodedPair> pairs, IReadOnlyList<int> indices, int padId)
    {
        var rows = indices.Select(i => pairs[i].Chosen.ToExample()).Concat(indices.Select(i => pairs[i].Rejected.ToExample())).ToList();
        return new PairBatch(indices, Collator.Collate(rows, padId),
            tensor(indices.Select(i => (float)pairs[i].Margin).ToArray()),
            tensor(indices.Select(i => (float)pairs[i].Chosen.ScoredTokens).ToArray()),
            tensor(indices.Select(i => (float)pairs[i].Rejected.ScoredTokens).ToArray()));
    }

    public static FeedbackBatch Feedback(IReadOnlyList<EncodedFeedback> data, IReadOnlyList<int> indices, int padId, bool withMismatched,
                                         int maxLength = int.MaxValue)
    {
        var rows = indices.Select(i => data[i].Sequence.ToExample()).ToList();
        TokenBatch? mismatched = null;
        if (withMismatched)
        {
            var (prompts, completions) = KtoLoss.MismatchedPairs(indices.Count);
            var mis = new List<TokenizedExample>();
            for (int k = 0; k < indices.Count; k++)
            {
                var m = data[indices[(int)prompts[k]]].Sequence.WithCompletionOf(data[indices[(int)completions[k]]].Sequence).ToExample();
                // Another example's completion may not fit after this prompt: cut its end, as the encoder does.
                if (m.Length > maxLength) m = new TokenizedExample(m.InputIds[..maxLength], m.LossMask[..maxLength]);
                mis.Add(m);
            }
            mismatched = Collator.Collate(mis, padId);
        }
        return new FeedbackBatch(indices, Collator.Collate(rows, padId), mismatched, tensor(indices.Select(i => data[i].Label).ToArray()));
    }

    /// <summary>log π(completion | prompt) per row: the sum of log-probs over scored, non-padding tokens, [N].</summary>
    public static Tensor SequenceLogps(CausalLM model, TokenBatch b)
    {
        using var scope = NewDisposeScope();
        var mask = b.LossMask.logical_and(b.AttentionMask.ne(0));
        return CausalLmLoss.SequenceLogProbs(model, b.InputIds, b.AttentionMask, mask).MoveToOuterDisposeScope();
    }

    /// <summary>As <see cref="SequenceLogps"/> without gradient (a frozen reference).</summary>
    public static Tensor ReferenceLogps(CausalLM reference, TokenBatch b)
    {
        using var noGrad = no_grad();
        return SequenceLogps(reference, b);
    }

    /// <summary>A frozen copy (eval mode, no gradients) of <paramref name="model"/>'s current weights; for a LoRA policy the
    /// base with the adapters off (no second copy of the weights, see <see cref="ModelSetup.Reference"/>).</summary>
    public static CausalLM FrozenCopy(CausalLM model)
    {
        if (FineAlign.Training.ModelSetup.Reference(model) is CausalLM adapterOff) return adapterOff;
        var copy = ModelFactory.Construct(model.Config, model.parameters().First().dtype);
        using (no_grad())
        {
            var src = model.state_dict();
            foreach (var (name, t) in copy.state_dict()) t.copy_(src[name]);
        }
        Freeze(copy);
        return copy;
    }

    /// <summary>Eval mode and requires_grad = false on every parameter.</summary>
    public static void Freeze(CausalLM model)
    {
        model.eval();
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    /// <summary>A short hex fingerprint of a model's weights (keys reference-log-prob caches).</summary>
    public static string Fingerprint(nn.Module model)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (name, t) in model.state_dict())
        {
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes(name));
            using var f = t.detach().to(ScalarType.Float32).contiguous();
            sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(f.data<float>().ToArray().AsSpan()));
        }
        return Convert.ToHexString(sha.GetHashAndReset())[..16].ToLowerInvariant();
    }

    /// <summary>A short hex fingerprint of tokenised pairs (ids and masks).</summary>
    public static string Fingerprint(IReadOnlyList<EncodedPair> pairs)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var p in pairs)
            foreach (var s in new[] { p.Chosen, p.Rejected })
            {
                var e = s.ToExample();
                sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(e.InputIds.AsSpan()));
                sha.AppendData(e.LossMask.Select(m => m ? (byte)1 : (byte)0).ToArray());
                sha.AppendData(BitConverter.GetBytes(s.Prompt.Length));
            }
        return Convert.ToHexString(sha.GetHashAndReset())[..16].ToLowerInvariant();
    }
}
