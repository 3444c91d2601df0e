using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FineAlign.Models;

/// <summary>
/// What every decoder layer needs for one forward pass: token positions, the attention mask
/// (or the causal fast path) and the cache. Shared by Llama and GPT-2 so both follow the same
/// padding/position/cache conventions (see <see cref="CausalLM"/>).
/// </summary>
internal sealed class AttentionPlan
{
    /// <summary>Positions of the new tokens, [batch, new].</summary>
    public required Tensor Positions { get; init; }
    /// <summary>Additive float mask [batch, 1, new, past + new], or null.</summary>
    public Tensor? Mask { get; init; }
    /// <summary>True when SDPA's built-in causal mask is all that is needed (no padding, no past).</summary>
    public bool IsCausal { get; init; }
    public KvCache? Cache { get; init; }

    /// <summary>
    /// Plans attention for <paramref name="inputIds"/> [B, T]. Positions come from the mask
    /// (cumsum − 1, clamped at 0, last T columns) when given, else cache.Length + arange(T).
    /// </summary>
    /// <param name="slidingWindow">Mistral's sliding window: a query at position i sees keys j with i − j &lt; window.</param>
    public static AttentionPlan Create(Tensor inputIds, Tensor? attentionMask, KvCache? cache, ScalarType dtype, int? slidingWindow = null)
    {
        if (inputIds.dim() != 2) throw new ArgumentException($"input ids must be [batch, tokens], got [{string.Join(", ", inputIds.shape)}]");
        long b = inputIds.shape[0], t = inputIds.shape[1];
        long past = cache?.Length ?? 0;
        long s = past + t;
        var device = inputIds.device;
        bool windowBites = slidingWindow is int w && s > w;

        if (cache is not null && past > 0 && attentionMask is null && cache.NextPositions is Tensor next)
        {
            if (next.shape[0] != b)
                throw new ArgumentException($"the KV cache holds {next.shape[0]} rows, the input has {b}");
            // Decode step: the cache's own positions and padding bias, nothing rebuilt (issue #18). A pass without a
            // mask continues every row (its new tokens are real).
            if (t == 1 && !windowBites)
                return new AttentionPlan { Positions = next, Mask = cache.KeyBias?.narrow(3, 0, s), Cache = cache };
            if (cache.KeyBias is not null)
            {
                // Several tokens (or Mistral's window) after padded rows: the mask the caller would have passed.
                using var keptPast = cache.KeyBias.narrow(3, 0, past).view(b, past).eq(0).to(ScalarType.Int64);
                using var newTokens = ones(new[] { b, t }, ScalarType.Int64, device);
                return Create(inputIds, cat(new[] { keptPast, newTokens }, 1), cache, dtype, slidingWindow);
            }
        }

        bool padded = false, rightPaddedOnly = false;
        Tensor positions;
        if (attentionMask is not null)
        {
            if (attentionMask.dim() != 2 || attentionMask.shape[0] != b || attentionMask.shape[1] != s)
                throw new ArgumentException($"attention mask must be [batch, past + new] = [{b}, {s}], got [{string.Join(", ", attentionMask.shape)}]");
            using var m = attentionMask.ne(0).to(ScalarType.Int64);
            positions = (m.cumsum(1) - LiveScalars.One).clamp_min(LiveScalars.Zero).narrow(1, past, t);
            padded = m.min().item<long>() == 0;
            if (padded && s > 1)
            {
                // Every row is 1…1 0…0: real tokens never look ahead, so causal attention alone already
                // keeps padding out of them (only the pad rows' own outputs differ, and those are ignored).
                using var nonIncreasing = m.narrow(1, 1, s - 1).le(m.narrow(1, 0, s - 1));
                rightPaddedOnly = nonIncreasing.all().item<bool>();
            }
        }
        else
        {
            positions = cache?.NextPositions is Tensor continued && past > 0
                ? continued + arange(t, ScalarType.Int64, device).unsqueeze(0)         // continues the rows (no padding seen)
                : arange(past, s, ScalarType.Int64, device).unsqueeze(0).expand(b, t);
        }
        double neg = dtype == ScalarType.Float16 ? -65504.0 : -3.0e38;
        if (cache is not null)
        {
            cache.SetNextPositions(positions.narrow(1, t - 1, 1) + LiveScalars.One);
            if (padded || (attentionMask is not null && cache.KeyBias is not null))
            {
                using var negative = full(1, neg, dtype, device);
                cache.RecordPadding(attentionMask!, dtype, negative);
            }
        }

        if ((!padded || (rightPaddedOnly && past == 0)) && !windowBites)
        {
            // Fast paths: SDPA's own causal mask when queries and keys coincide, no mask at all for
            // a single new token attending to everything cached.
            if (past == 0) return new AttentionPlan { Positions = positions, IsCausal = true, Cache = cache };
            if (t == 1 && !padded) return new AttentionPlan { Positions = positions, Cache = cache };
        }

        // Causal + padding as an additive mask. A large finite negative (not -inf) keeps fully
        // masked rows (queries on left padding) finite: their softmax is uniform instead of NaN.
        using var keyIdx = arange(s, ScalarType.Int64, device).unsqueeze(0);            // [1, S]
        using var queryIdx = arange(past, s, ScalarType.Int64, device).unsqueeze(1);    // [T, 1]
        var allowed = keyIdx.le(queryIdx).unsqueeze(0).unsqueeze(0);                    // [1, 1, T, S]
        if (windowBites)
        {
            using var lowest = queryIdx - slidingWindow!.Value;                           // [T, 1]
            using var inWindow = keyIdx.gt(lowest).unsqueeze(0).unsqueeze(0);
            var both = allowed.logical_and(inWindow);
            allowed.Dispose();
            allowed = both;
        }
        if (padded)
        {
            using var keep = attentionMask!.ne(0).view(b, 1, 1, s);
            var both = allowed.logical_and(keep);
            allowed.Dispose();
            allowed = both;
        }
        using var zero = zeros(1, dtype, device);
        using var negT = full(1, neg, dtype, device);
        var mask = where(allowed, zero, negT).expand(b, 1, t, s);
        allowed.Dispose();
        return new AttentionPlan { Positions = positions, Mask = mask, Cache = cache };
    }

    /// <summary>The same plan with another mask handle (a recomputed layer gets its own handles, see <see cref="Recompute"/>).</summary>
    public AttentionPlan WithMask(Tensor? mask) => new() { Positions = Positions, Mask = mask, IsCausal = IsCausal, Cache = Cache };

    /// <summary>
    /// How one new token attends to the cache on the decode path: libtorch's fused SDPA kernel (the default) or three
    /// plain calls (q·kᵀ, softmax, ·v). decode-profile times both in one process: the three calls were 1.3–3× slower
    /// (bench/RESULTS.md), so SDPA stays. Process-wide; set it only from a benchmark.
    /// </summary>
    internal static bool DecodeWithMatmul { get; set; }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<long, Scalar> Scales = new();

    /// <summary>
    /// <see cref="Attend"/> over a KV cache. For one new token: with grouped-query attention each group's query heads
    /// become the query rows of their shared k/v head (no copy of the cache per head), and the kernel is
    /// <see cref="DecodeWithMatmul"/>'s choice. Several new tokens (prefill) go to <see cref="Attend"/>.
    /// </summary>
    public Tensor AttendCached(Tensor q, Tensor k, Tensor v)
    {
        if (q.shape[2] != 1 || IsCausal) return Attend(q, k, v);
        long b = q.shape[0], heads = q.shape[1], kvHeads = k.shape[1], d = q.shape[3];
        var grouped = kvHeads == heads ? q : q.reshape(b, kvHeads, heads / kvHeads, d);   // heads j·rep … j·rep + rep − 1 share k/v head j
        var mask = Mask is null ? null : (Mask.dtype == q.dtype ? Mask : Mask.to(q.dtype));   // [B, 1, 1, S] broadcasts over the rows
        Tensor o;
        if (!DecodeWithMatmul) o = F.scaled_dot_product_attention(grouped, k, v, mask);
        else
        {
            var scale = Scales.GetOrAdd(d, dim => (1.0 / Math.Sqrt(dim)).ToScalar());   // lives with the process (see LiveScalars)
            var scores = grouped.matmul(k.transpose(-2, -1)).mul_(scale);              // [B, Hkv, rep, S]
            if (mask is not null) scores.add_(mask);
            o = scores.softmax(-1).matmul(v);
        }
        return kvHeads == heads ? o : o.reshape(b, heads, 1, v.shape[3]);
    }

    /// <summary>Scaled dot-product attention with grouped-query support (k/v heads repeated as in HF's repeat_kv).</summary>
    public Tensor Attend(Tensor q, Tensor k, Tensor v)
    {
        long heads = q.shape[1], kvHeads = k.shape[1];
        if (kvHeads != heads)
        {
            long rep = heads / kvHeads;
            long bb = k.shape[0], ss = k.shape[2], dd = k.shape[3];
            k = k.unsqueeze(2).expand(bb, kvHeads, rep, ss, dd).reshape(bb, heads, ss, dd);
            v = v.unsqueeze(2).expand(bb, kvHeads, rep, ss, v.shape[3]).reshape(bb, heads, ss, v.shape[3]);
        }
        var mask = Mask is null ? null : (Mask.dtype == q.dtype ? Mask : Mask.to(q.dtype));
        return F.scaled_dot_product_attention(q, k, v, mask, 0.0, IsCausal);
    }
}

/// <summary>Activation by Hugging Face name (<c>hidden_act</c> / <c>activation_function</c>).</summary>
internal static class Activations
{
    public static readonly string[] Supported = { "silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu" };

    public static void Check(string name, string source)
    {
        if (Array.IndexOf(Supported, name) < 0)
            throw new FineAlignException($"{source}: activation '{name}' is not supported (supported: {string.Join(", ", Supported)}).");
    }

    public static Tensor Apply(string name, Tensor x) => name switch
    {
        "silu" or "swish" => F.silu(x),
        "gelu" => F.gelu(x),
        // gelu_new (GPT-2) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), i.e. PyTorch's tanh approximation.
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => F.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
        "relu" => F.relu(x),
        _ => throw new FineAlignException($"activation '{name}' is not supported."),
    };
}
