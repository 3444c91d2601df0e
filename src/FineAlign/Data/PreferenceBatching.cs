using System.Security.Cryptography;
using FineAlign.Text;
using static TorchSharp.torch;

namespace FineAlign.Data;

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
/// <see cref="PreferenceBatching.MismatchedPairs"/>), scored without gradient for the KL reference point.
/// </summary>
public sealed record FeedbackBatch(IReadOnlyList<int> Indices, TokenBatch Tokens, TokenBatch? Mismatched, Tensor Labels) : IDisposable
{
    public int Count => Indices.Count;

    public void Dispose()
    {
        Tokens.Dispose(); Mismatched?.Dispose(); Labels.Dispose();
    }
}

/// <summary>What the reward-model, DPO, KTO, BCO trainers and the preference evaluation share: batches of pairs and feedback.</summary>
public static class PreferenceBatching
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
            var (prompts, completions) = MismatchedPairs(indices.Count);
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

    /// <summary>
    /// KTO's mismatched pairing for z: prompt i is paired with completion i − 1 (cyclically), i.e. the
    /// completions are shifted by one within the batch, as TRL does. With a batch of 1 the "mismatched"
    /// pair is the example itself (no other completion exists). Use the arrays with index_select.
    /// </summary>
    public static (long[] PromptIndex, long[] CompletionIndex) MismatchedPairs(int batchSize)
    {
        if (batchSize < 1) throw new FineAlignException($"KTO needs a batch of at least 1 example, got {batchSize}");
        var prompts = new long[batchSize];
        var completions = new long[batchSize];
        for (int i = 0; i < batchSize; i++)
        {
            prompts[i] = i;
            completions[i] = (i + batchSize - 1) % batchSize;
        }
        return (prompts, completions);
    }

    /// <summary>Refuses a pair longer than the model's context, naming its file and line.</summary>
    public static void CheckContext(int context, PreferenceDataset train, PreferenceDataset? eval)
    {
        foreach (var ds in eval is null ? [train] : new[] { train, eval })
        {
            var tooLong = ds.Pairs.FirstOrDefault(p => Math.Max(p.Chosen.Length, p.Rejected.Length) > context);
            if (tooLong is not null)
                throw new FineAlignException($"{ds.Source}:{tooLong.Line}: the pair has {Math.Max(tooLong.Chosen.Length, tooLong.Rejected.Length)} tokens " +
                                             $"but the model's context is {context}; lower --max-length");
        }
    }

    /// <summary>Refuses an example longer than the model's context, and training data without both labels.</summary>
    public static void CheckContext(int context, FeedbackDataset train, FeedbackDataset? eval)
    {
        foreach (var ds in eval is null ? [train] : new[] { train, eval })
        {
            var tooLong = ds.Examples.FirstOrDefault(e => e.Sequence.Length > context);
            if (tooLong is not null)
                throw new FineAlignException($"{ds.Source}:{tooLong.Line}: the example has {tooLong.Sequence.Length} tokens but the model's context is {context}; lower --max-length");
        }
        if (train.Desirable == 0 || train.Undesirable == 0)
            throw new FineAlignException($"{train.Source}: the training data needs both thumbs-up (label true) and thumbs-down (label false) examples; " +
                                         $"it has {train.Desirable} and {train.Undesirable}");
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
