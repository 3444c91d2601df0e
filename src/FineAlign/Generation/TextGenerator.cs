using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Generation;

/// <summary>
/// Batched autoregressive decoding: prompts are left-padded so every row's next token sits in the
/// last column; the KV cache holds past keys/values; finished rows keep decoding padding (ignored)
/// until every row is done or <see cref="GenerationOptions.MaxNewTokens"/> is reached.
/// </summary>
public static class TextGenerator
{
    /// <summary>Encodes text prompts (BOS per the tokenizer) and generates a continuation for each.</summary>
    public static IReadOnlyList<GeneratedSequence> Generate(CausalLM model, TextTokenizer tokenizer, IReadOnlyList<string> prompts, GenerationOptions options)
    {
        var ids = prompts.Select((p, i) => EncodePrompt(tokenizer, p, i)).ToList();
        return Generate(model, ids, options, tokenizer);
    }

    /// <summary>A text prompt's token ids as generation reads them: BOS (when the tokenizer adds one) + the encoded text.</summary>
    public static int[] EncodePrompt(TextTokenizer tokenizer, string prompt, int index = 0)
    {
        var body = tokenizer.Encode(prompt);
        var withBos = tokenizer.AddBos && tokenizer.BosId is int bos ? body.Prepend(bos).ToArray() : body;
        if (withBos.Length == 0)
            throw new FineAlignException($"prompt {index + 1} is empty; generation needs at least one token (or a tokenizer that adds BOS).");
        return withBos;
    }

    /// <summary>Generates from token-id prompts. <paramref name="tokenizer"/> is needed for texts and stop strings.</summary>
    public static IReadOnlyList<GeneratedSequence> Generate(CausalLM model, IReadOnlyList<int[]> prompts, GenerationOptions options, TextTokenizer? tokenizer = null)
    {
        options.Validate();
        if (prompts.Count == 0) return Array.Empty<GeneratedSequence>();
        if (options.StopStrings is { Count: > 0 } && tokenizer is null)
            throw new FineAlignException("stop strings need a tokenizer to decode the generated text.");
        for (int i = 0; i < prompts.Count; i++)
            if (prompts[i].Length == 0) throw new FineAlignException($"prompt {i + 1} is empty; generation needs at least one token.");

        int batch = prompts.Count;
        int promptLen = prompts.Max(p => p.Length);
        int totalLen = promptLen + options.MaxNewTokens;
        if (totalLen > model.Config.MaxPositionEmbeddings)
            throw new FineAlignException($"prompt length {promptLen} + max_new_tokens {options.MaxNewTokens} = {totalLen} exceeds the model's context of {model.Config.MaxPositionEmbeddings} tokens.");

        var eos = new HashSet<int>(options.EosTokenIds ?? model.Config.EosTokenIds);
        int pad = tokenizer?.PaddingId ?? model.Config.PadTokenId ?? (eos.Count > 0 ? eos.First() : 0);
        var device = model.parameters().First().device;

        // Left padding: row i's prompt occupies the last prompts[i].Length columns.
        var idsFlat = PadRows.Rows(prompts.Select(p => (IReadOnlyList<long>)p.Select(x => (long)x).ToArray()).ToList(), promptLen, (long)pad, left: true);
        var maskFlat = PadRows.Mask(prompts.Select(p => p.Length).ToList(), promptLen, 1L, left: true);

        var tokens = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        var logProbs = Enumerable.Range(0, batch).Select(_ => new List<float>()).ToArray();
        var reasons = Enumerable.Repeat(FinishReason.Length, batch).ToArray();
        var finished = new bool[batch];
        var texts = new string?[batch];

        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            using var outer = torch.NewDisposeScope();
            using var generator = new torch.Generator((ulong)options.Seed, device);
            using var cache = options.UseCache ? model.NewCache(totalLen) : null;
            // The decode layout copies the wide weights once per call (TransposedWeight); below a few steps it does not pay back.
            if (cache is not null) cache.DecodeLayout = options.MaxNewTokens >= MinStepsForDecodeLayout;

            var allIds = torch.tensor(idsFlat, new long[] { batch, promptLen }, device: device);
            Tensor? mask = torch.tensor(maskFlat, new long[] { batch, promptLen }, device: device);
            var input = allIds;
            using var scalars = new SamplerScalars(options);

            for (int step = 0; step < options.MaxNewTokens; step++)
            {
                using var scope = torch.NewDisposeScope();
                // Only the last position's logits are needed (the prefill's other rows of the LM head are skipped).
                var hidden = model.ForwardHidden(input, mask, cache);
                var lastHidden = hidden.narrow(1, hidden.shape[1] - 1, 1);
                var last = (cache is null ? model.LmHead(lastHidden) : model.DecodeLmHead(lastHidden, cache)).squeeze(1);
                if (last.dtype != ScalarType.Float32) last = last.to_type(ScalarType.Float32);
                var (next, nextLogp) = ChooseNext(last, options, generator, scalars);
                var nextIds = next.data<long>().ToArray();
                var nextLp = nextLogp.data<float>().ToArray();

                for (int i = 0; i < batch; i++)
                {
                    if (finished[i]) { nextIds[i] = pad; continue; }
                    int t = (int)nextIds[i];
                    tokens[i].Add(t);
                    logProbs[i].Add(nextLp[i]);
                    options.OnToken?.Invoke(i, t);
                    if (eos.Contains(t)) { finished[i] = true; reasons[i] = FinishReason.Eos; }
                    else if (options.StopStrings is { Count: > 0 } stops)
                    {
                        string text = tokenizer!.Decode(tokens[i]);
                        int cut = FirstStop(text, stops);
                        if (cut >= 0) { finished[i] = true; reasons[i] = FinishReason.StopString; texts[i] = text[..cut]; }
                    }
                }

                var nextTensor = torch.tensor(nextIds, new long[] { batch, 1 }, device: device);
                if (cache is null)
                {
                    mask = torch.cat(new[] { mask!, torch.ones(batch, 1, dtype: ScalarType.Int64, device: device) }, 1).MoveToOuterDisposeScope();
                    allIds = torch.cat(new[] { allIds, nextTensor }, 1).MoveToOuterDisposeScope();
                    input = allIds;
                }
                else
                {
                    // The cache keeps each row's positions and padding: later steps pass no mask (nothing rebuilt per step).
                    mask = null;
                    input = nextTensor.MoveToOuterDisposeScope();
                }
                if (finished.All(f => f)) break;
            }
        }
        finally
        {
            model.train(wasTraining);
        }

        var results = new GeneratedSequence[batch];
        for (int i = 0; i < batch; i++)
        {
            string text = texts[i] ?? (tokenizer is null ? "" : tokenizer.Decode(tokens[i]));
            results[i] = new GeneratedSequence(prompts[i], tokens[i].ToArray(), logProbs[i].ToArray(), text, reasons[i]);
        }
        return results;
    }

    /// <summary>
    /// Picks the next token per row and returns its log-probability under softmax(logits / T)
    /// (log_softmax, never softmax().log()). Top-k/top-p only restrict what can be drawn.
    /// </summary>
    internal static (Tensor Next, Tensor LogProb) ChooseNext(Tensor logits, GenerationOptions o, torch.Generator generator, SamplerScalars? scalars = null)
    {
        if (o.IsGreedy)
        {
            var logp = logits.log_softmax(-1);
            var next = logits.argmax(-1);
            return (next, logp.gather(-1, next.unsqueeze(-1)).squeeze(-1));
        }
        bool own = scalars is null;
        scalars ??= new SamplerScalars(o);
        try
        {
            var scaled = logits / scalars.Temperature;
            var logpScaled = scaled.log_softmax(-1);
            var filtered = scaled;
            if (o.TopK > 0 && o.TopK < logits.shape[^1])
            {
                var kth = scaled.topk(o.TopK, -1).values[TensorIndex.Colon, TensorIndex.Slice(-1, null)];
                filtered = filtered.masked_fill(filtered.lt(kth), scalars.NegativeInfinity);
            }
            Tensor sample;
            if (o.TopP < 1.0)
                sample = SampleNucleus(filtered, o.TopP, generator, NucleusCandidates(o, logits.shape[^1]), out _, scalars);
            else
                sample = InverseCdf(filtered.softmax(-1), generator);
            return (sample, logpScaled.gather(-1, sample.unsqueeze(-1)).squeeze(-1));
        }
        finally
        {
            if (own) scalars.Dispose();
        }
    }

    /// <summary>
    /// The sampler's constants as Scalars made once per generation call instead of once per step: a temporary Scalar
    /// is a native allocation with a finalizer that nothing keeps alive during the call (docs/RELIABILITY.md).
    /// </summary>
    internal sealed class SamplerScalars(GenerationOptions o) : IDisposable
    {
        public readonly Scalar Temperature = o.Temperature.ToScalar();
        public readonly Scalar TopP = o.TopP.ToScalar();
        public readonly Scalar Zero = 0.0.ToScalar();
        public readonly Scalar NegativeInfinity = double.NegativeInfinity.ToScalar();

        public void Dispose()
        {
            Temperature.Dispose(); TopP.Dispose(); Zero.Dispose(); NegativeInfinity.Dispose();
        }
    }

    /// <summary>
    /// Calls with fewer new tokens keep nn.Linear's layout: the Wᵀ copies cost about three decode steps' saving (bench
    /// `gemv`: the 32000 × 288 head's transposed copy vs its per-step gain; docs/DECODING.md).
    /// </summary>
    internal const int MinStepsForDecodeLayout = 4;

    /// <summary>How many top candidates the nucleus shortcut tries first.</summary>
    internal const int DefaultNucleusCandidates = 256;

    /// <summary>The second tier is this many times the first (4,096 at 32k), tried when it is under half the vocabulary.</summary>
    internal const int NucleusTierGrowth = 16;

    internal static int NucleusCandidates(GenerationOptions o, long vocab)
        => (int)Math.Min(vocab, o.TopK > 0 ? o.TopK + 1L : DefaultNucleusCandidates);

    /// <summary>
    /// Nucleus sampling (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration") in sorted order:
    /// the nucleus is a prefix there. Exact shortcut: the <paramref name="candidates"/> largest probabilities
    /// (torch.topk) suffice when the tokens ranked above the last candidate already reach p, or the last candidate
    /// has probability 0 — then every token outside is dropped in the full sort too, the cumulative sums over the
    /// prefix are the same numbers (a sequential scan), and the same uniform draw picks the same token. Otherwise a
    /// second tier of <see cref="NucleusTierGrowth"/> × as many candidates is tried (when under half the vocabulary),
    /// then the whole vocabulary is sorted (a flat distribution). <paramref name="candidates"/> ≤ 1 forces the full sort.
    /// </summary>
    internal static Tensor SampleNucleus(Tensor filtered, double topP, torch.Generator generator, int candidates, out bool shortcut, SamplerScalars? scalars = null)
    {
        using var ownP = scalars is null ? topP.ToScalar() : null;
        using var ownZero = scalars is null ? 0.0.ToScalar() : null;
        var p = scalars?.TopP ?? ownP!;
        var zero = scalars?.Zero ?? ownZero!;
        // Probabilities over the unsorted vocabulary, so both paths normalise by the same sum.
        var probs = filtered.softmax(-1);
        long vocab = probs.shape[^1];
        Tensor sorted, order;
        shortcut = false;
        // Two tiers before the full sort: a nucleus of a few hundred tokens (a flat step of a trained model) would
        // otherwise sort the whole vocabulary (bench: 10.9 ms per batch-8 step at 32k against ~1 ms for the first tier).
        sorted = order = null!;
        for (long k = candidates; k > 1 && k < vocab;)
        {
            (sorted, order) = probs.topk((int)k, -1, largest: true, sorted: true);
            var cum = sorted.cumsum(-1);
            var above = cum[TensorIndex.Colon, -2];                       // mass ranked above the last candidate
            var last = sorted[TensorIndex.Colon, -1];
            if (above.gt(p).logical_or(last.eq(zero)).all().item<bool>()) { shortcut = true; break; }
            long next = k * NucleusTierGrowth;
            if (next >= vocab / 2) break;
            // The next tier adds (next − k) tokens of probability ≤ last each; where even that cannot lift a row's mass
            // to p, its topk must fail, so sort at once (a speed choice only: the full sort is always exact).
            if ((cum[TensorIndex.Colon, -1] + last * (double)(next - k)).lt(p).any().item<bool>()) break;
            k = next;
        }
        if (!shortcut) (sorted, order) = probs.sort(-1, descending: true);
        // Drop a token when the tokens ranked above it already reach p (the top token always stays).
        var kept = sorted.masked_fill((sorted.cumsum(-1) - sorted).gt(p), zero);
        return order.gather(-1, InverseCdf(kept, generator).unsqueeze(-1)).squeeze(-1);
    }

    /// <summary>
    /// One draw per row from unnormalised non-negative weights [B, V] by inversion: the first index
    /// whose running sum exceeds u · total, u ~ U[0, 1). Zero-weight entries are never chosen.
    /// Same distribution as torch.multinomial(w, 1), about 20× cheaper at V = 32000 (bench/RESULTS.md).
    /// </summary>
    private static Tensor InverseCdf(Tensor weights, torch.Generator generator)
    {
        var cdf = weights.to_type(ScalarType.Float64).cumsum(-1);                       // fp64: no drift over 32k terms
        var total = cdf[TensorIndex.Colon, TensorIndex.Slice(-1, null)];
        var u = torch.rand(new long[] { weights.shape[0], 1 }, ScalarType.Float64, weights.device, generator: generator) * total;
        u = torch.minimum(u, total.nextafter(torch.zeros_like(total)));                // u < total even after rounding
        var index = torch.searchsorted(cdf, u, right: true).squeeze(-1);
        return index;
    }

    private static int FirstStop(string text, IReadOnlyList<string> stops)
    {
        int best = -1;
        foreach (var s in stops)
        {
            if (string.IsNullOrEmpty(s)) continue;
            int i = text.IndexOf(s, StringComparison.Ordinal);
            if (i >= 0 && (best < 0 || i < best)) best = i;
        }
        return best;
    }
}
