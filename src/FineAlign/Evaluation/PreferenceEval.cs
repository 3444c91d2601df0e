using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Trainers;
using static TorchSharp.torch;

namespace FineAlign.Evaluation;

/// <summary>
/// Preference accuracy on held-out pairs: the share of pairs whose chosen response scores strictly higher
/// (ties count as wrong, so an untrained policy equal to its reference scores 0, not 50%). Chance is 50%.
/// </summary>
public sealed record PreferenceAccuracy(int Pairs, double Accuracy, double MeanMargin, double MeanChosen, double MeanRejected)
{
    /// <summary>Half-width of the 95% normal interval of the accuracy.</summary>
    public double ConfidenceHalfWidth => 1.96 * Math.Sqrt(Accuracy * (1 - Accuracy) / Math.Max(1, Pairs));
}

/// <summary>
/// The length baseline of a preference set — the first thing a reviewer asks: the accuracy of "the shorter reply
/// wins" and of "the longer reply wins" (completion tokens; equal lengths count as wrong for both, like ties above).
/// A learned score that does not beat the better of the two may have learned length.
/// </summary>
public sealed record LengthBaseline(int Pairs, double ShorterWins, double LongerWins)
{
    public double Ties => 1 - ShorterWins - LongerWins;
    public double Best => Math.Max(ShorterWins, LongerWins);
}

public static class PreferenceEval
{
    /// <summary>"Shorter wins" and "longer wins" accuracies over <paramref name="pairs"/>.</summary>
    public static LengthBaseline Length(IReadOnlyList<EncodedPair> pairs)
    {
        if (pairs.Count == 0) throw new FineAlignException("no preference pairs to evaluate");
        int shorter = pairs.Count(p => p.Chosen.Completion.Length < p.Rejected.Completion.Length);
        int longer = pairs.Count(p => p.Chosen.Completion.Length > p.Rejected.Completion.Length);
        return new LengthBaseline(pairs.Count, (double)shorter / pairs.Count, (double)longer / pairs.Count);
    }

    /// <summary>Scores of a sequence reward model: r(x, y_w) vs r(x, y_l).</summary>
    public static PreferenceAccuracy RewardModel(ScoredLM rewardModel, IReadOnlyList<EncodedPair> pairs, int padId, int batchSize = 32)
        => Run(pairs, padId, batchSize, rewardModel, b => rewardModel.SequenceScores(b.Tokens.InputIds, b.Tokens.AttentionMask));

    /// <summary>DPO's implicit reward β(log π(y|x) − log π_ref(y|x)) of a policy against its reference.</summary>
    public static PreferenceAccuracy ImplicitReward(CausalLM policy, CausalLM reference, IReadOnlyList<EncodedPair> pairs, int padId, double beta, int batchSize = 32)
        => Run(pairs, padId, batchSize, policy, b =>
            beta * (SequenceLogProbs.OfFrozen(policy, b.Tokens) - SequenceLogProbs.OfFrozen(reference, b.Tokens)));

    /// <summary>Reference-free baseline: does the model give the chosen completion a higher log-likelihood?</summary>
    public static PreferenceAccuracy LogLikelihood(CausalLM model, IReadOnlyList<EncodedPair> pairs, int padId, int batchSize = 32)
        => Run(pairs, padId, batchSize, model, b => SequenceLogProbs.OfFrozen(model, b.Tokens));

    private static PreferenceAccuracy Run(IReadOnlyList<EncodedPair> pairs, int padId, int batchSize, nn.Module model, Func<PairBatch, Tensor> score)
    {
        if (pairs.Count == 0) throw new FineAlignException("no preference pairs to evaluate");
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = no_grad();
            int correct = 0;
            double margin = 0, chosen = 0, rejected = 0;
            for (int start = 0; start < pairs.Count; start += batchSize)
            {
                using var scope = NewDisposeScope();
                var idx = Enumerable.Range(start, Math.Min(batchSize, pairs.Count - start)).ToArray();
                using var b = PreferenceBatching.Pairs(pairs, idx, padId);
                var s = score(b).to(ScalarType.Float64).data<double>().ToArray();
                for (int k = 0; k < idx.Length; k++)
                {
                    double c = s[k], r = s[idx.Length + k];
                    if (c > r) correct++;
                    margin += c - r; chosen += c; rejected += r;
                }
            }
            int n = pairs.Count;
            return new PreferenceAccuracy(n, (double)correct / n, margin / n, chosen / n, rejected / n);
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }
}
