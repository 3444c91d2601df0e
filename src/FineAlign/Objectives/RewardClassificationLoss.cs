// Pointwise reward model from labelled single texts: logistic regression on the scalar score (binary cross-entropy),
// the objective of a sentiment classifier such as TRL's gpt2-imdb reward (lvwerra/distilbert-imdb), with one logit.
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FineAlign.Objectives;

/// <summary>
/// L = −[y log σ(r) + (1 − y) log σ(−r)], averaged over examples; the score r is then the log-odds of "positive".
/// Metrics: "accuracy" = mean[(r &gt; 0) = y], "rewards/positive" and "rewards/negative" the mean r of each class
/// (a class absent from the batch reports 0, never NaN).
/// </summary>
public static class RewardClassificationLoss
{
    /// <param name="scores">r, [B].</param>
    /// <param name="labels">y, [B] booleans (true = positive / thumbs-up).</param>
    public static ObjectiveResult Compute(Tensor scores, Tensor labels)
    {
        using var scope = NewDisposeScope();
        var r = ObjectiveChecks.Vector(scores, "scores");
        long b = r.shape[0];
        ObjectiveChecks.NonEmpty(b, "classification loss");
        var y = ObjectiveChecks.Labels(labels, "labels", b);
        var yf = y.to(r.dtype);
        var losses = -(yf * F.logsigmoid(r) + (1 - yf) * F.logsigmoid(-r));
        var loss = losses.mean();
        var metrics = new Dictionary<string, double>
        {
            ["accuracy"] = ObjectiveChecks.Mean(r.detach().gt(0).eq(y).to(ScalarType.Float32)),
            ["rewards/positive"] = ObjectiveChecks.MaskedMean(r, y),
            ["rewards/negative"] = ObjectiveChecks.MaskedMean(r, y.logical_not()),
        };
        return new ObjectiveResult(loss.MoveToOuterDisposeScope(), losses.MoveToOuterDisposeScope(), metrics);
    }
}
