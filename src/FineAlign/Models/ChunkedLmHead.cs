using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FineAlign.Models;

/// <summary>
/// Next-token log-probabilities straight from final hidden states, a chunk of positions at a time and only at the
/// positions asked for (the Liger-kernel idea, Hsu et al. 2024, arXiv 2410.10989): the [B, T, vocab] logits are never
/// materialised. Each chunk's logits are recomputed in backward (<see cref="Recompute"/>), so at most one
/// [chunk, vocab] fp32 block is alive at a time, forward or backward. Values equal the full log_softmax + gather.
/// </summary>
public static class ChunkedLmHead
{
    /// <summary>Most positions per chunk.</summary>
    public const int DefaultChunk = 1024;

    /// <summary>A chunk's fp32 logits are kept near this many elements (32 M = 128 MB): 1024 positions for a 32k vocabulary,
    /// 682 for SmolLM2's 49k, 220 for Qwen2.5's 152k.</summary>
    public const long ChunkElements = 32L << 20;

    /// <summary>Chunk size override (null = <see cref="ChunkFor"/>; 0 or less = one block, no recomputation: benchmarks only).</summary>
    public static int? Chunk { get; set; }

    /// <summary>Positions per chunk for a vocabulary of <paramref name="vocab"/> tokens.</summary>
    public static int ChunkFor(long vocab) => (int)Math.Clamp(ChunkElements / Math.Max(1, vocab), 64, DefaultChunk);

    /// <summary>
    /// log p(ids[:, t+1] | ids[:, ..t]) as [B, T-1] fp32, computed only where <paramref name="targetMask"/>[:, t+1]
    /// is true (0 elsewhere; null = everywhere). <paramref name="hidden"/> is <see cref="CausalLM.ForwardHidden"/>'s output.
    /// </summary>
    public static Tensor TokenLogProbs(CausalLM model, Tensor hidden, Tensor inputIds, Tensor? targetMask, double temperature = 1.0, int? chunk = null)
    {
        if (hidden.dim() != 3 || inputIds.dim() != 2 || hidden.shape[0] != inputIds.shape[0] || hidden.shape[1] != inputIds.shape[1])
            throw new FineAlignException($"hidden states [{string.Join(", ", hidden.shape)}] do not match input ids [{string.Join(", ", inputIds.shape)}]");
        if (inputIds.shape[1] < 2) throw new FineAlignException("a causal LM loss needs sequences of at least 2 tokens");
        using var scope = NewDisposeScope();
        long b = inputIds.shape[0], t = inputIds.shape[1] - 1, h = hidden.shape[2];
        var flatHidden = hidden.narrow(1, 0, t).reshape(b * t, h);
        var flatTargets = inputIds.narrow(1, 1, t).reshape(b * t).to(ScalarType.Int64, hidden.device);
        Tensor? where = null;
        if (targetMask is not null)
        {
            where = targetMask.narrow(1, 1, t).reshape(b * t).to(hidden.device).ne(0).nonzero().squeeze(1);
            flatHidden = flatHidden.index_select(0, where);
            flatTargets = flatTargets.index_select(0, where);
        }
        var picked = LogProbsOfRows(model, flatHidden, flatTargets, temperature, chunk ?? Chunk ?? ChunkFor(model.Config.VocabSize));
        var full = where is null ? picked : zeros(b * t, ScalarType.Float32, hidden.device).index_copy(0, where, picked);
        return full.view(b, t).MoveToOuterDisposeScope();
    }

    /// <summary>As above from the model: its final hidden states, then the chunked head.</summary>
    public static Tensor FromIds(CausalLM model, Tensor inputIds, Tensor? attentionMask, Tensor? targetMask, double temperature = 1.0)
    {
        using var scope = NewDisposeScope();
        var hidden = model.ForwardHidden(inputIds, attentionMask);
        return TokenLogProbs(model, hidden, inputIds, targetMask, temperature).MoveToOuterDisposeScope();
    }

    /// <summary>log_softmax(LmHead(rows) / temperature)[i, targets[i]] for rows [N, hidden], as [N] fp32.</summary>
    public static Tensor LogProbsOfRows(CausalLM model, Tensor rows, Tensor targets, double temperature = 1.0, int chunk = DefaultChunk)
        => ScoreRows(model, rows, targets, temperature, entropy: false, chunk).LogProbs;

    /// <summary>
    /// As <see cref="LogProbsOfRows"/>, and with <paramref name="entropy"/> also each row's entropy of the next-token
    /// distribution, −Σ_v π(v) log π(v) with π = softmax(LmHead(rows) / temperature), [N] fp32 and detached (a metric:
    /// PPO's policy/entropy_avg). The entropy is taken from the same chunk's logits in the forward pass and is not
    /// recomputed in backward, so it costs no second LM-head matmul and never needs the [N, vocab] logits at once.
    /// </summary>
    public static (Tensor LogProbs, Tensor? Entropy) ScoreRows(CausalLM model, Tensor rows, Tensor targets, double temperature, bool entropy, int chunk)
    {
        long n = rows.shape[0];
        if (n == 0) return (zeros(0, ScalarType.Float32, rows.device), entropy ? zeros(0, ScalarType.Float32, rows.device) : null);
        // Entropy pieces, one per chunk, owned here (detached from every dispose scope) until they are concatenated.
        var entropies = new List<Tensor>();
        Tensor Piece(Tensor x, Tensor target, int index)
        {
            // The vocabulary softmax is always fp32, whatever the matmul's dtype (mixed precision keeps losses in fp32).
            var logits = model.LmHead(x).to(ScalarType.Float32);
            if (temperature != 1.0) logits = logits / temperature;
            if (!entropy) return F.cross_entropy(logits, target, reduction: nn.Reduction.None).neg();
            var logp = F.log_softmax(logits, 1);
            if (entropies.Count == index)   // the first call of this chunk; the recomputation in backward skips it
                using (no_grad()) entropies.Add((logp.exp() * logp).sum(1).neg().DetachFromDisposeScope());
            return logp.gather(1, target.unsqueeze(1)).squeeze(1);
        }
        try
        {
            Tensor picked;
            if (chunk <= 0) picked = Piece(rows, targets, 0);
            else
            {
                var parts = new List<Tensor>();
                int index = 0;
                for (long start = 0; start < n; start += chunk, index++)
                {
                    long len = Math.Min(chunk, n - start);
                    int i = index;
                    parts.Add(Recompute.Apply((x, c) => Piece(x, c[0]!, i), rows.narrow(0, start, len), targets.narrow(0, start, len)));
                }
                picked = parts.Count == 1 ? parts[0] : cat(parts, 0);
            }
            return (picked, entropy ? (entropies.Count == 1 ? entropies[0].alias() : cat(entropies, 0)) : null);
        }
        finally { foreach (var e in entropies) e.Dispose(); }
    }
}
