using FineAlign.Models;
using FineAlign.Text;

namespace FineAlign.Evaluation;

/// <summary>Generations of a policy on held-out prompts, scored with the corpus's known word valences.</summary>
public sealed record SentimentEvalResult(double TrueReward, double KlToInitial, double Distinct1, double Distinct2, double MeanLength, int Samples)
{
    /// <summary>The generated responses, in prompt order (for sample tables and standard errors).</summary>
    [System.Text.Json.Serialization.JsonIgnore] public IReadOnlyList<string> Texts { get; init; } = [];
    /// <summary>True reward of each response in <see cref="Texts"/>.</summary>
    [System.Text.Json.Serialization.JsonIgnore] public IReadOnlyList<double> Rewards { get; init; } = [];
    /// <summary>Share of generated words the corpus grammar can write, and of entirely well-formed responses.</summary>
    public double CorpusWordShare { get; init; }
    public double WellFormedShare { get; init; }
}

/// <summary>
/// Ground-truth evaluation on the built-in corpus: <see cref="PolicyEval"/> with <see cref="EvalReward.CorpusTruth"/>
/// (the mean word valence of the response) and the corpus fluency measures, in the shape older commands print.
/// </summary>
public static class SentimentEval
{
    public static SentimentEvalResult Run(CausalLM policy, CausalLM initial, TextTokenizer tokenizer, IReadOnlyList<string> prompts,
        int maxNewTokens, long seed, int batchSize = 32)
    {
        var r = PolicyEval.Run(policy, initial, tokenizer, prompts, EvalReward.CorpusTruth(),
            new PolicyEvalOptions { MaxNewTokens = maxNewTokens, Seed = seed, BatchSize = batchSize, CorpusFluency = true });
        return new SentimentEvalResult(r.Reward, r.Kl, r.Distinct1, r.Distinct2, r.MeanLength, r.Count)
        {
            Texts = r.Responses.Select(x => x.Response).ToList(), Rewards = r.Responses.Select(x => x.Reward).ToList(),
            CorpusWordShare = r.CorpusWordShare ?? 1, WellFormedShare = r.WellFormedShare ?? 0,
        };
    }

    /// <summary>Distinct word n-grams / all word n-grams over the texts (Li et al. 2016); 0 when there are none.</summary>
    public static double DistinctN(IEnumerable<string> texts, int n) => PolicyEval.DistinctN(texts, n);
}
