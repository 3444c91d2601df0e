using System.Globalization;
using FineAlign.Data;
using FineAlign.Data.Corpus;
using FineAlign.Models;
using FineAlign.Text;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FineAlign.Rewards;

/// <summary>
/// Builds reward sources from short specs (the <c>--reward</c> values of <c>finealign ppo</c>):
/// <c>lexicon</c> / <c>lexicon:token</c> (built-in ground-truth sentiment, sequence or token level),
/// <c>rm:PATH</c> (sequence reward model folder), <c>tlcr:PATH</c> (TLCR discriminator, continuous),
/// <c>discrete:PATH</c> (the discriminator thresholded to +1/−1, 0 in the dead zone 0.4 &lt; p &lt; 0.6), <c>pivot:SPEC</c> (pivot-token segments of a
/// token-level SPEC); <c>SPEC@W</c> weights a component. Several specs form a <see cref="WeightedRewardSum"/>; with a
/// <see cref="RewardNormalization"/> each component is normalised on its own (<see cref="NormalizedRewardSource"/>).
/// Model-based sources must share the policy's tokenizer; with <c>retokenize</c> a sequence reward model with
/// another tokenizer scores the decoded text (with a warning); token-level sources then refuse.
/// </summary>
public static class RewardSpecs
{
    public static RewardSource Build(IReadOnlyList<string> specs, TextTokenizer policyTokenizer, bool retokenize = false,
        Action<string>? warn = null, TlcrOptions? tlcrOptions = null, PivotOptions? pivotOptions = null, JudgeOptions? judgeOptions = null,
        RewardNormalization? normalization = null, string? labelKey = null)
    {
        if (specs.Count == 0) throw new FineAlignException("no reward given; use e.g. --reward lexicon or --reward tlcr:PATH");
        var parts = new List<(RewardSource, double)>();
        var used = new HashSet<string>();
        foreach (var raw in specs)
        {
            var (spec, weight) = SplitWeight(raw);
            var source = BuildOne(spec, policyTokenizer, retokenize, warn, tlcrOptions, pivotOptions, used, judgeOptions, labelKey);
            // Each component gets its own running statistics, before its weight applies.
            parts.Add((normalization is { Active: true } ? new NormalizedRewardSource(source, normalization) : source, weight));
        }
        if (parts.Count == 1 && parts[0].Item2 == 1.0) return parts[0].Item1;
        return new WeightedRewardSum("total", parts.ToArray());
    }

    /// <summary>"spec@0.5" → ("spec", 0.5); no '@' → weight 1.</summary>
    public static (string Spec, double Weight) SplitWeight(string raw)
    {
        int at = raw.LastIndexOf('@');
        if (at < 0) return (raw.Trim(), 1.0);
        string w = raw[(at + 1)..];
        if (!double.TryParse(w, NumberStyles.Float, CultureInfo.InvariantCulture, out double weight) || !double.IsFinite(weight))
            throw new FineAlignException($"reward '{raw}': weight '{w}' after '@' is not a number");
        return (raw[..at].Trim(), weight);
    }

    private static RewardSource BuildOne(string spec, TextTokenizer tok, bool retokenize, Action<string>? warn,
        TlcrOptions? tlcr, PivotOptions? pivot, HashSet<string> used, JudgeOptions? judge = null, string? labelKey = null)
    {
        int colon = spec.IndexOf(':');
        string kind = (colon < 0 ? spec : spec[..colon]).Trim().ToLowerInvariant();
        string arg = colon < 0 ? "" : spec[(colon + 1)..].Trim();
        string Name(string n) { string name = n; for (int i = 2; !used.Add(name); i++) name = $"{n}_{i}"; return name; }
        switch (kind)
        {
            case "lexicon":
                if (arg is "" or "sequence") return Lexicon(Name("lexicon"));
                if (arg == "token") return LexiconTokens(Name("lexicon_token"), tok);
                throw new FineAlignException($"reward '{spec}': lexicon takes 'sequence' or 'token', not '{arg}'");
            case "rm":
            {
                var path = Require(spec, arg);
                var rm = ScoredLM.Load(path);
                if (rm.Kind != HeadKind.Sequence || rm.NumLabels != 1)
                    throw new FineAlignException($"reward '{spec}': {path} is not a sequence reward model (1-label sequence head)");
                var rmTok = TokenizerLoader.Load(path);
                bool same = TokenizerMatch.Same(tok, rmTok);
                if (!same && !retokenize)
                    throw new FineAlignException($"reward '{spec}': the reward model's tokenizer differs from the policy's; pass --retokenize to score decoded text (detokenise/retokenise) or use a reward model trained with the policy tokenizer");
                if (!same) warn?.Invoke($"reward '{spec}': tokenizer differs from the policy's; responses are decoded and re-tokenised for the reward model");
                rm.eval();
                return new SequenceRewardSource(Name("rm"), b => ModelScoring.SequenceScores(rm, same ? tok : rmTok, b, same ? null : tok));
            }
            case "tlcr" or "discrete":
            {
                var path = Require(spec, arg);
                var disc = LoadDiscriminator(spec, path, tok, retokenize);
                Func<RewardBatch, Tensor> probs = b => ModelScoring.PositiveProbabilities(disc, tok, b);
                if (kind == "tlcr") return new TlcrReward(Name("tlcr"), probs, tlcr);
                // The discrete baseline {+1, −1, 0}: +1 where the discriminator says positive, −1 negative, and 0 in the
                // TLCR code's dead zone 0.4 < p < 0.6, where the neutral tokens (trained toward ½) sit.
                var discrete = new TlcrOptions { Mapping = TlcrMapping.Discrete, DeadZone = true };
                return new DiscreteTokenRewardSource(Name("discrete"), b => TlcrReward.FromProbabilities(probs(b), discrete));
            }
            case "pivot":
            {
                if (arg == "") throw new FineAlignException($"reward '{spec}': pivot needs a token-level source, e.g. pivot:tlcr:PATH or pivot:lexicon:token");
                var inner = BuildOne(arg, tok, retokenize, warn, tlcr, pivot, used, judge, labelKey);
                return new PivotSegmentRewardSource(Name("pivot_" + inner.Name), inner, pivot);
            }
            case "http" or "https" or "http-token":
            {
                // http:URL keeps the URL's own scheme: "http://host/score" is read as kind "http", arg "//host/score".
                string url = kind == "http-token" || arg.StartsWith("http", StringComparison.OrdinalIgnoreCase) ? arg : kind + ":" + arg;
                if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || arg == "")
                    throw new FineAlignException($"reward '{spec}': '{url}' is not a URL (e.g. --reward http://127.0.0.1:5000/get_reward)");
                return new RemoteRewardSource(Name(kind == "http-token" ? "http_token" : "http"), uri, tokenLevel: kind == "http-token", tokenizer: tok, labelColumn: labelKey);
            }
            case "judge":
            {
                if (!Uri.TryCreate(arg, UriKind.Absolute, out var uri) || (uri.Scheme != "http" && uri.Scheme != "https"))
                    throw new FineAlignException($"reward '{spec}': '{arg}' is not an http(s) URL (e.g. --reward judge:http://127.0.0.1:8000 --judge-rubric rubric.txt)");
                return new JudgeRewardSource(Name("judge"), uri, judge ?? new JudgeOptions());
            }
            case "exact-match" or "numeric":   // verifiable rewards from a dataset column (AnswerRewards.cs)
                return new AnswerReward(Name(kind.Replace('-', '_')), arg, kind == "numeric" ? AnswerMatch.Numeric : AnswerMatch.Exact);
            default:
                throw new FineAlignException($"unknown reward '{spec}' (expected lexicon, lexicon:token, rm:PATH, tlcr:PATH, discrete:PATH, pivot:SPEC, http://URL, http-token:http://URL, judge:URL, exact-match:COLUMN or numeric:COLUMN, optionally @WEIGHT)");
        }
    }

    // The folder as --model finds it: a model folder, a run folder (its model/), or org/name from the hub cache.
    private static string Require(string spec, string arg)
    {
        if (arg == "") throw new FineAlignException($"reward '{spec}' needs a model folder after ':'");
        try { return ModelLocator.Resolve(arg); }
        catch (FineAlignException e) { throw new FineAlignException($"reward '{spec}': {e.Message}"); }
    }

    private static ScoredLM LoadDiscriminator(string spec, string path, TextTokenizer tok, bool retokenize)
    {
        var disc = ScoredLM.Load(path);
        if (disc.Kind != HeadKind.Token || disc.NumLabels != 2)
            throw new FineAlignException($"reward '{spec}': {path} is not a TLCR discriminator (2-label token head)");
        if (!TokenizerMatch.Same(tok, TokenizerLoader.Load(path)))
            throw new FineAlignException($"reward '{spec}': the discriminator's tokenizer differs from the policy's; token-level rewards cannot be re-tokenised" +
                                         (retokenize ? " (--retokenize only applies to sequence reward models)" : "") + "; train the discriminator on the policy's trunk");
        disc.eval();
        return disc;
    }

    /// <summary>Ground-truth sentiment of the built-in corpus (mean word valence of the response), on the last token.</summary>
    public static RewardSource Lexicon(string name = "lexicon") =>
        ProgrammaticRewardSource.Sequence(name, e => Data.Corpus.Lexicon.TrueReward(e.ResponseText
            ?? throw new FineAlignException($"reward source '{name}' needs response texts")));

    /// <summary>Each valenced word's effective valence on the token that completes it.</summary>
    public static RewardSource LexiconTokens(string name, TextTokenizer tokenizer) =>
        ProgrammaticRewardSource.Token(name, e =>
        {
            var ids = e.ResponseIds.Select(x => (int)x).ToArray();
            string text = tokenizer.Decode(ids);
            return TokenText.FromCharRewards(tokenizer, ids, Data.Corpus.Lexicon.ValenceAtWordEnds(text));
        });
}

/// <summary>Whether two tokenizers produce the same ids (vocabulary size, special ids, and encodings of a probe text).</summary>
public static class TokenizerMatch
{
    private const string Probe = "The movie was NOT bad at all -- 10/10, would watch again! Ünïcödé \u00e9\u4e2d\U0001F642\n\tend.";

    public static bool Same(TextTokenizer a, TextTokenizer b) =>
        a.VocabSize == b.VocabSize && a.BosId == b.BosId && a.EosId == b.EosId && a.PaddingId == b.PaddingId &&
        a.Encode(Probe).SequenceEqual(b.Encode(Probe));
}

/// <summary>Runs scoring models on (prompt, response) batches.</summary>
public static class ModelScoring
{
    /// <summary>
    /// BOS + prompt + response (right-padded) and, per row, the column where the response starts. With
    /// <paramref name="decodeWith"/> the response ids are decoded with that (policy) tokenizer and re-encoded with <paramref name="tok"/>.
    /// </summary>
    public static (Tensor Ids, Tensor Mask, int[] Starts, int[] Lengths) Inputs(TextTokenizer tok, RewardBatch batch, TextTokenizer? decodeWith = null)
    {
        int b = (int)batch.BatchSize, t = (int)batch.Time;
        var ids = batch.ResponseIds.to(int64).cpu().contiguous().data<long>().ToArray();
        var mask = batch.ResponseMask.to(ScalarType.Bool).cpu().contiguous().data<bool>().ToArray();
        var rows = new List<(int[] Prompt, int[] Response)>();
        for (int i = 0; i < b; i++)
        {
            string promptText = batch.PromptTexts?[i] ?? throw new FineAlignException("model-based rewards need the prompt texts");
            var prompt = tok.Encode(promptText);
            if (tok.AddBos && tok.BosId is int bos) prompt = prompt.Prepend(bos).ToArray();
            var resp = new List<int>();
            for (int j = 0; j < t; j++) if (mask[i * t + j]) resp.Add((int)ids[i * t + j]);
            var response = decodeWith is null ? resp.ToArray() : tok.Encode(decodeWith.Decode(resp));
            rows.Add((prompt, response));
        }
        int len = Math.Max(1, rows.Max(r => r.Prompt.Length + r.Response.Length));
        var whole = PadRows.Concat(rows.Select(r => r.Prompt).ToList(), rows.Select(r => r.Response).ToList());
        var flat = PadRows.Rows(whole.Select(x => (IReadOnlyList<long>)x.Select(v => (long)v).ToArray()).ToList(), len, (long)tok.PaddingId);
        var m = PadRows.Mask(whole.Select(x => x.Length).ToList(), len, 1L);
        var starts = rows.Select(r => r.Prompt.Length).ToArray();
        var lengths = rows.Select(r => r.Response.Length).ToArray();
        return (tensor(flat, new long[] { b, len }), tensor(m, new long[] { b, len }), starts, lengths);
    }

    /// <summary>A sequence reward model's score of each (prompt, response), [B].</summary>
    public static Tensor SequenceScores(ScoredLM rm, TextTokenizer tok, RewardBatch batch, TextTokenizer? decodeWith = null)
    {
        var (ids, mask, _, _) = Inputs(tok, batch, decodeWith);
        using var _ = no_grad();
        return rm.SequenceScores(ids, mask).to(float32);
    }

    /// <summary>The discriminator's P(positive) at each response token, in the batch's layout [B, T] (½ on padding).</summary>
    public static Tensor PositiveProbabilities(ScoredLM disc, TextTokenizer tok, RewardBatch batch)
    {
        var (ids, mask, starts, _) = Inputs(tok, batch);
        int b = (int)batch.BatchSize, t = (int)batch.Time;
        float[] p;
        using (no_grad())
        using (NewDisposeScope())
            p = F.softmax(disc.TokenScores(ids, mask).to(float32), -1).select(-1, 1).contiguous().data<float>().ToArray();
        long len = ids.shape[1];
        var rmask = batch.ResponseMask.to(ScalarType.Bool).cpu().contiguous().data<bool>().ToArray();
        var output = new float[b * t];
        for (int i = 0; i < b; i++)
        {
            int k = 0;
            for (int j = 0; j < t; j++)
                output[i * t + j] = rmask[i * t + j] ? p[i * len + starts[i] + k++] : 0.5f;
        }
        return tensor(output, new long[] { b, t });
    }
}
