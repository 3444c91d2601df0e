using FineAlign.Data;
using FineAlign.Models;
using static TorchSharp.torch;

namespace FineAlign.Generation;

/// <summary>
/// One batch of sampled responses as tensors: prompt (left-padded, width P) + response (right-padded, width T) in one
/// [B, P + T] input, the response ids and mask [B, T], and the texts the reward sources read.
/// </summary>
public sealed class RolloutBatch : IDisposable
{
    public required Tensor InputIds { get; init; }
    public required Tensor AttentionMask { get; init; }
    public required Tensor ResponseIds { get; init; }
    public required Tensor ResponseMask { get; init; }
    public required int PromptWidth { get; init; }
    public required string[] Prompts { get; init; }
    public required string[] Responses { get; init; }
    public required bool[] EndedWithEos { get; init; }
    public long BatchSize => ResponseIds.shape[0];

    /// <summary>From generated sequences (their prompt ids, tokens, texts and finish reasons).</summary>
    public static RolloutBatch From(IReadOnlyList<GeneratedSequence> gen, IReadOnlyList<string> prompts, int pad) =>
        Build(gen.Select(g => g.PromptIds).ToList(), gen.Select(g => g.Tokens).ToList(), prompts, gen.Select(g => g.Text).ToArray(),
            gen.Select(g => g.FinishReason == FinishReason.Eos).ToArray(), pad);

    /// <summary>From an engine's samples; row i answers <paramref name="promptIds"/>[i] (texts decoded by the caller).</summary>
    /// <remarks>
    /// <paramref name="device"/> (the policy's): the four tensors are moved there once, here, so the trainer's scoring
    /// passes, reward shaping, advantages and every mini-batch slice stay on the device with no further copies per step.
    /// </remarks>
    public static RolloutBatch From(IReadOnlyList<RolloutSample> samples, IReadOnlyList<int[]> promptIds, IReadOnlyList<string> prompts,
        IReadOnlyList<string> responses, int pad, Device? device = null) =>
        Build(promptIds, samples.Select(s => s.ResponseIds).ToList(), prompts, responses.ToArray(),
            samples.Select(s => s.Finish == RolloutFinish.Stop).ToArray(), pad, device);

    private static RolloutBatch Build(IReadOnlyList<int[]> promptIds, IReadOnlyList<int[]> responseIds, IReadOnlyList<string> prompts,
        string[] responses, bool[] endedWithEos, int pad, Device? device = null)
    {
        // The token ids arrive as host arrays (the engine's output): one host → device copy per tensor per batch.
        Tensor On(Tensor t)
        {
            if (device is null || Devices.Same(t, device)) return t;
            var moved = t.to(device);
            t.Dispose();
            return moved;
        }
        int b = promptIds.Count, p = promptIds.Max(x => x.Length), t = Math.Max(1, responseIds.Max(x => x.Length));
        // Prompts left-padded to P, responses right-padded to T, side by side: [B, P + T].
        var promptTensor = tensor(PadRows.Rows(Longs(promptIds), p, (long)pad, left: true), new long[] { b, p });
        var promptMask = tensor(PadRows.Mask(promptIds.Select(x => x.Length).ToList(), p, 1L, left: true), new long[] { b, p });
        var rids = tensor(PadRows.Rows(Longs(responseIds), t, (long)pad), new long[] { b, t });
        var responseMask = PadRows.Mask(responseIds.Select(x => x.Length).ToList(), t, 1L);
        var ids = cat(new[] { promptTensor, rids }, 1);
        var mask = cat(new[] { promptMask, tensor(responseMask, new long[] { b, t }) }, 1);
        promptTensor.Dispose(); promptMask.Dispose();
        return new RolloutBatch
        {
            InputIds = On(ids), AttentionMask = On(mask),
            ResponseIds = On(rids), ResponseMask = On(tensor(responseMask.Select(x => (float)x).ToArray(), new long[] { b, t })),
            PromptWidth = p, Prompts = prompts.ToArray(), Responses = responses, EndedWithEos = endedWithEos,
        };
    }

    private static List<IReadOnlyList<long>> Longs(IReadOnlyList<int[]> rows) => rows.Select(r => (IReadOnlyList<long>)r.Select(x => (long)x).ToArray()).ToList();

    /// <summary>
    /// Log-probs [b, T] of the response tokens, and with <paramref name="entropy"/> the policy's entropy [b, T] at each
    /// response position (detached, a metric), from the model's final hidden states [b, P + T, hidden] of the rows
    /// <paramref name="rows"/> (null = all). Through <see cref="ChunkedLmHead"/>: the LM head and log-softmax run only at
    /// valid response positions, a chunk of positions at a time, so no [b, P + T, vocab] logits exist; 0 on padding.
    /// Values equal <see cref="ResponseLogProbs(Tensor, double)"/> on the full logits (same per-row arithmetic).
    /// </summary>
    public (Tensor LogProbs, Tensor? Entropy) ScoreResponses(CausalLM model, Tensor hidden, double temperature, Tensor? rows = null,
        bool entropy = false, int? chunk = null)
    {
        using var scope = NewDisposeScope();
        var ids = rows is null ? ResponseIds : ResponseIds.index_select(0, rows);
        var mask = rows is null ? ResponseMask : ResponseMask.index_select(0, rows);
        long b = ids.shape[0], t = ids.shape[1];
        if (hidden.dim() != 3 || hidden.shape[0] != b || hidden.shape[1] != PromptWidth + t)
            throw new FineAlignException($"hidden states [{string.Join(", ", hidden.shape)}] do not match the rollout's [{b}, {PromptWidth + t}, ·]");
        long h = hidden.shape[2];
        // Position P − 1 + j predicts response token j.
        var where = mask.reshape(b * t).to(hidden.device).ne(0).nonzero().squeeze(1);
        var states = hidden.narrow(1, PromptWidth - 1, t).reshape(b * t, h).index_select(0, where);
        var targets = ids.reshape(b * t).to(ScalarType.Int64, hidden.device).index_select(0, where);
        var (lp, ent) = ChunkedLmHead.ScoreRows(model, states, targets, temperature, entropy, chunk ?? ChunkedLmHead.Chunk ?? ChunkedLmHead.ChunkFor(model.Config.VocabSize));
        Tensor Spread(Tensor x) => zeros(b * t, ScalarType.Float32, hidden.device).index_copy(0, where, x).view(b, t).MoveToOuterDisposeScope();
        return (Spread(lp), ent is null ? null : Spread(ent));
    }

    /// <summary>Log-probs [B, T] of the response tokens under logits [B, P + T, V] at <paramref name="temperature"/>.</summary>
    public Tensor ResponseLogProbs(Tensor logits, double temperature) => LogProbsOf(logits, temperature, ResponseIds);

    /// <summary>As <see cref="ResponseLogProbs(Tensor, double)"/> for the rows <paramref name="rows"/> of the batch (logits of those rows only).</summary>
    public Tensor ResponseLogProbs(Tensor logits, double temperature, Tensor rows) => LogProbsOf(logits, temperature, ResponseIds.index_select(0, rows));

    private Tensor LogProbsOf(Tensor logits, double temperature, Tensor responseIds)
    {
        using var scope = NewDisposeScope();
        long t = ResponseIds.shape[1];
        var l = logits.narrow(1, PromptWidth - 1, t).to(float32);
        if (temperature != 1.0) l = l / temperature;
        return Gather(l, responseIds).MoveToOuterDisposeScope();
    }

    /// <summary>log_softmax(logits)[b, t, ids[b, t]], [B, T].</summary>
    public static Tensor Gather(Tensor logits, Tensor ids)
    {
        using var scope = NewDisposeScope();
        return logits.log_softmax(-1).gather(-1, ids.to(int64).unsqueeze(-1)).squeeze(-1).MoveToOuterDisposeScope();
    }

    /// <summary>Values [B, T] of the states before each response token.</summary>
    public Tensor ResponseValues(Tensor values) => values.narrow(1, PromptWidth - 1, ResponseIds.shape[1]);

    /// <summary>Response logits [B, T, V] (the positions predicting each response token).</summary>
    public Tensor ResponseLogits(Tensor logits) => logits.narrow(1, PromptWidth - 1, ResponseIds.shape[1]);

    public void Dispose()
    {
        InputIds.Dispose(); AttentionMask.Dispose(); ResponseIds.Dispose(); ResponseMask.Dispose();
    }
}
