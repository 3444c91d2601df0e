using System.Globalization;
using FineAlign.Data.Corpus;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Text;
using static TorchSharp.torch;

namespace FineAlign.Evaluation;

/// <summary>
/// The reward an evaluation scores responses with: the built-in corpus's ground truth (<see cref="CorpusTruthSpec"/>,
/// only meaningful for policies trained on that corpus) or any reward spec the library builds (rm:PATH, tlcr:PATH,
/// lexicon, weighted sums …). A response's score is the sum over its tokens of the source's [B, T] rewards — for a
/// sequence reward that is its one score, for a token reward the return an RL trainer would see.
/// </summary>
public sealed class EvalReward
{
    /// <summary>The spec of the built-in corpus's ground truth (mean word valence of the response).</summary>
    public const string CorpusTruthSpec = "truth";
    /// <summary>Several reward specs (a weighted sum) are stored as one string joined with this.</summary>
    public const string Separator = " + ";

    private readonly RewardSource _source;

    private EvalReward(string spec, string label, RewardSource source, bool isCorpusTruth)
    {
        Spec = spec; Label = label; _source = source; IsCorpusTruth = isCorpusTruth;
    }

    /// <summary>What the settings and cache store: <c>truth</c> or the reward specs joined with " + ".</summary>
    public string Spec { get; }
    /// <summary>Column label in tables: "true reward" or the spec.</summary>
    public string Label { get; }
    public bool IsCorpusTruth { get; }
    /// <summary>The dataset columns the reward reads (e.g. <c>solution</c> for <c>numeric:solution</c>).</summary>
    public IReadOnlyList<string> Columns => _source.Columns;

    /// <summary>
    /// The prompt file's rows' columns for this reward: checked (file, line, field) when the reward reads any; null when it reads none.
    /// </summary>
    public IReadOnlyList<IReadOnlyDictionary<string, string>>? ColumnsOf(string path, IReadOnlyList<Data.PromptRow> rows)
    {
        if (Columns.Count == 0) return null;
        Data.PromptReader.RequireColumns(path, rows, Columns, _ => $"the evaluation reward '{Label}'", _source.ColumnProblem);
        return rows.Select(r => r.Columns).ToList();
    }

    public static EvalReward CorpusTruth() => new(CorpusTruthSpec, "true reward", RewardSpecs.Lexicon("true_reward"), true);

    /// <summary>
    /// <c>truth</c> → <see cref="CorpusTruth"/>; anything else → <see cref="RewardSpecs.Build"/> of the specs (a
    /// sequence reward model with another tokenizer scores decoded text, as <c>--retokenize</c> allows).
    /// </summary>
    public static EvalReward Build(string spec, TextTokenizer policyTokenizer, Action<string>? warn = null)
    {
        if (spec.Trim() == CorpusTruthSpec) return CorpusTruth();
        var specs = Split(spec);
        var source = RewardSpecs.Build(specs, policyTokenizer, retokenize: true, warn: warn);
        return new EvalReward(string.Join(Separator, specs), string.Join(Separator, specs), source, false);
    }

    public static EvalReward FromSource(string label, RewardSource source) => new(label, label, source, false);

    public static IReadOnlyList<string> Split(string spec) =>
        spec.Split(Separator.Trim(), StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    /// <summary>Σ_t r_t of each response of the batch.</summary>
    public double[] Score(RewardBatch batch)
    {
        using var rewards = _source.Compute(batch);
        using var scope = NewDisposeScope();
        return (rewards.Values * rewards.Mask).sum(1).to(ScalarType.Float64).data<double>().ToArray();
    }
}

/// <summary>One evaluated response.</summary>
/// <param name="Kl">Σ_t log π − log π_base over its sampled tokens (k1).</param>
/// <param name="BaseLogProb">Σ_t log π_base of its tokens (the fluency proxy's numerator).</param>
/// <param name="Corpus">Built-in corpus fluency; null when the prompts are not the corpus's.</param>
/// <param name="SamplerGap">Mean |sampler log-prob − policy log-prob| over its tokens (T = 1): ≈ 0 when the sampler (a rollout
/// server) holds the policy's weights; null when the sampler reported none or no policy was scored.</param>
public sealed record ResponseScore(string Prompt, string Response, double Reward, double Kl, double BaseLogProb, int Tokens, FluencyScore? Corpus,
    double? SamplerGap = null);

/// <summary>
/// A policy's held-out evaluation: reward ± standard error, KL to the base, the fluency proxy (mean log-prob per token
/// of the responses under the base model, and its perplexity), diversity and length; on the built-in corpus also the
/// share of corpus words, of well-formed responses, and the reward over well-formed responses only.
/// </summary>
public sealed record PolicyEvalResult(IReadOnlyList<ResponseScore> Responses, string RewardLabel)
{
    public int Count => Responses.Count;
    public double Reward => Responses.Count == 0 ? 0 : Responses.Average(r => r.Reward);
    public double RewardSe => EvalPoint.StandardError(Responses.Select(r => r.Reward).ToList());
    public double Kl => Responses.Count == 0 ? 0 : Responses.Average(r => r.Kl);
    /// <summary>Pooled mean log π_base per response token (higher = more fluent by the base model's judgment).</summary>
    public double BaseLogProbPerToken => Responses.Sum(r => r.Tokens) == 0 ? 0 : Responses.Sum(r => r.BaseLogProb) / Responses.Sum(r => r.Tokens);
    public double BasePerplexity => Math.Exp(-BaseLogProbPerToken);
    public double MeanLength => Responses.Count == 0 ? 0 : Responses.Average(r => r.Tokens);
    /// <summary>Mean over responses of <see cref="ResponseScore.SamplerGap"/>; null when none has one.</summary>
    public double? SamplerGap => Responses.Where(r => r.SamplerGap is not null).Select(r => r.SamplerGap!.Value).DefaultIfEmpty(double.NaN).Average() is double g && !double.IsNaN(g) ? g : null;
    public double Distinct1 => PolicyEval.DistinctN(Responses.Select(r => r.Response), 1);
    public double Distinct2 => PolicyEval.DistinctN(Responses.Select(r => r.Response), 2);
    public bool HasCorpusFluency => Responses.Count > 0 && Responses.All(r => r.Corpus is not null);
    /// <summary>Share of all generated words that the corpus grammar can write (pooled over responses).</summary>
    public double? CorpusWordShare => !HasCorpusFluency ? null
        : Responses.Sum(r => r.Corpus!.Value.Words) is int w and > 0 ? (double)Responses.Sum(r => r.Corpus!.Value.CorpusWords) / w : 1.0;
    public double? WellFormedShare => !HasCorpusFluency ? null : Responses.Count(r => r.Corpus!.Value.WellFormed) / (double)Responses.Count;
    /// <summary>Mean reward over the well-formed responses (null when none is).</summary>
    public double? RewardWellFormed => !HasCorpusFluency || !Responses.Any(r => r.Corpus!.Value.WellFormed) ? null
        : Responses.Where(r => r.Corpus!.Value.WellFormed).Average(r => r.Reward);

    /// <summary>The numbers as log scalars, e.g. <c>eval/reward</c>, <c>eval/kl</c> (what trainers log with --eval-steps).</summary>
    public Dictionary<string, double> Metrics(string prefix = "eval/")
    {
        var m = new Dictionary<string, double>
        {
            [prefix + "reward"] = Reward, [prefix + "reward_se"] = RewardSe, [prefix + "kl"] = Kl,
            [prefix + "base_logprob_per_token"] = BaseLogProbPerToken, [prefix + "base_perplexity"] = BasePerplexity,
            [prefix + "distinct_1"] = Distinct1, [prefix + "distinct_2"] = Distinct2, [prefix + "mean_length"] = MeanLength,
        };
        if (CorpusWordShare is double c) m[prefix + "corpus_word_share"] = c;
        if (WellFormedShare is double f) m[prefix + "well_formed_share"] = f;
        if (RewardWellFormed is double rw) m[prefix + "reward_well_formed"] = rw;
        return m;
    }
}

/// <summary>How responses are sampled for an evaluation (T = 1 and a fixed seed: the same for every policy).</summary>
public sealed record PolicyEvalOptions
{
    public int MaxNewTokens { get; init; } = 48;
    public long Seed { get; init; } = 7819;
    public int BatchSize { get; init; } = 32;
    /// <summary>Score corpus fluency (the prompts are the built-in corpus's and the policies were trained on it).</summary>
    public bool CorpusFluency { get; init; }
}

/// <summary>
/// Samples one response per prompt (T = 1, seeded per batch) from a policy and scores it: reward, KL(π ‖ π_base) per
/// response as the k1 estimate Σ_t (log π − log π_base) over the sampled tokens (unbiased), the base model's
/// log-prob of the tokens (fluency proxy), distinct-n over word n-grams (Li et al. 2016) and, on the built-in corpus,
/// <see cref="CorpusFluency"/>. One call does it all, so trainers (<c>--eval-steps</c>), <c>eval-policy</c> and
/// <c>report</c> share one definition.
/// </summary>
public static class PolicyEval
{
    /// <param name="rollouts">
    /// Where the responses are sampled: null = in-process from <paramref name="policy"/>; a remote engine (servers that hold
    /// the policy's weights) only samples — KL and the fluency proxy are still computed here with the local models.
    /// </param>
    public static PolicyEvalResult Run(CausalLM policy, CausalLM baseModel, TextTokenizer tokenizer, IReadOnlyList<string> prompts,
        EvalReward reward, PolicyEvalOptions options, IRolloutEngine? rollouts = null, IReadOnlyList<IReadOnlyDictionary<string, string>>? columns = null)
    {
        if (reward.Columns.Count > 0 && (columns is null || columns.Count < prompts.Count))
            throw new FineAlignException($"the evaluation reward '{reward.Label}' reads dataset column(s) {string.Join(", ", reward.Columns)}: give a prompt file whose rows have them");
        var engine = rollouts ?? new LocalRolloutEngine(policy, tokenizer);
        if (prompts.Count == 0) throw new FineAlignException("no evaluation prompts");
        var scores = new List<ResponseScore>(prompts.Count);
        bool policyWasTraining = policy.training, baseWasTraining = baseModel.training;
        try
        {
            for (int s = 0; s < prompts.Count; s += options.BatchSize)
            {
                var chunk = prompts.Skip(s).Take(options.BatchSize).ToList();
                var gen = engine.Sequences(new RolloutRequest
                {
                    PromptIds = chunk.Select((p, i) => TextGenerator.EncodePrompt(tokenizer, p, s + i)).ToList(), MaxNewTokens = options.MaxNewTokens,
                    Temperature = 1.0, Seed = options.Seed + s, StopTokenIds = policy.Config.EosTokenIds,
                }, tokenizer);
                scores.AddRange(Score(policy, baseModel, tokenizer, chunk, gen, reward, options.CorpusFluency, columns?.Skip(s).Take(chunk.Count).ToList()));
            }
        }
        finally
        {
            if (policyWasTraining) policy.train();
            if (baseWasTraining) baseModel.train();
        }
        return new PolicyEvalResult(scores, reward.Label);
    }

    /// <summary>
    /// Scores given responses (e.g. best-of-n picks). <paramref name="policy"/> null: KL is not measured (0; the
    /// caller knows it, as the best-of-n bound).
    /// </summary>
    public static List<ResponseScore> Score(CausalLM? policy, CausalLM baseModel, TextTokenizer tokenizer, IReadOnlyList<string> prompts,
        IReadOnlyList<GeneratedSequence> gen, EvalReward reward, bool corpusFluency, IReadOnlyList<IReadOnlyDictionary<string, string>>? columns = null)
    {
        using var scope = NewDisposeScope();
        var batch = RolloutBatch.From(gen, prompts, tokenizer.PaddingId);   // disposed by the scope
        double[] rewards = reward.Score(new RewardBatch(batch.ResponseIds, batch.ResponseMask, null, prompts, gen.Select(g => g.Text).ToList(), columns));
        double[] kl = new double[gen.Count], baseLp;
        var gaps = new double?[gen.Count];
        using (no_grad())
        {
            baseModel.eval();
            var lq = batch.ResponseLogProbs(baseModel.Forward(batch.InputIds, batch.AttentionMask), 1.0);
            baseLp = (lq * batch.ResponseMask).sum(1).to(ScalarType.Float64).data<double>().ToArray();
            if (policy is not null)
            {
                policy.eval();
                var lp = batch.ResponseLogProbs(policy.Forward(batch.InputIds, batch.AttentionMask), 1.0);
                kl = Kl.PerToken(lp, lq, batch.ResponseMask).sum(1).to(ScalarType.Float64).data<double>().ToArray();
                var local = lp.contiguous().data<float>().ToArray();
                long t = lp.shape[1];
                for (int i = 0; i < gen.Count; i++)
                {
                    double sum = 0; int count = 0;
                    for (int j = 0; j < gen[i].LogProbs.Length && j < t; j++)
                        if (float.IsFinite(gen[i].LogProbs[j])) { sum += Math.Abs(gen[i].LogProbs[j] - local[i * t + j]); count++; }
                    if (count > 0) gaps[i] = sum / count;
                }
            }
        }
        var list = new List<ResponseScore>(gen.Count);
        for (int i = 0; i < gen.Count; i++)
            list.Add(new ResponseScore(prompts[i], gen[i].Text, rewards[i], kl[i], baseLp[i], gen[i].Tokens.Length,
                corpusFluency ? CorpusFluency.Score(prompts[i], gen[i].Text) : null, gaps[i]));
        return list;
    }

    /// <summary>Distinct word n-grams / all word n-grams over the texts (Li et al. 2016); 0 when there are none.</summary>
    public static double DistinctN(IEnumerable<string> texts, int n)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        long total = 0;
        foreach (var t in texts)
        {
            var words = t.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            for (int i = 0; i + n <= words.Length; i++) { seen.Add(string.Join(' ', words, i, n)); total++; }
        }
        return total == 0 ? 0 : (double)seen.Count / total;
    }

    internal static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);
}
