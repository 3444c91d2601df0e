using FineAlign.Data;
// Kahneman–Tversky Optimization (Ethayarajh et al. 2024, arXiv 2402.01306); cross-checked with TRL kto_trainer.py.
using static TorchSharp.torch;

namespace FineAlign.Objectives;

/// <summary>
/// KTO on unpaired examples labelled desirable/undesirable. Δ(y) = log π(y|x) − log π_ref(y|x).
/// Reference point z = max(0, mean Δ(y')) over mismatched completions y' (detached).
/// desirable: λ_D(1 − σ(β(Δ − z))); undesirable: λ_U(1 − σ(β(z − Δ))); averaged over the batch.
/// Metrics: "kl" = z; rewards/chosen, rewards/rejected = mean βΔ over the desirable / undesirable
/// examples; logps/chosen, logps/rejected = mean policy log π(y|x) over the same subsets.
/// A subset absent from the batch reports 0 (not NaN).
/// </summary>
public static class KtoLoss
{
    public const double DefaultBeta = 0.1;

    /// <param name="policyLogps">log π(y|x) of each example, [B], carries the gradient.</param>
    /// <param name="referenceLogps">log π_ref(y|x), [B].</param>
    /// <param name="desirable">[B] bool (or 0/1): true = desirable, false = undesirable.</param>
    /// <param name="policyMismatchedLogps">log π(y'|x) of the mismatched completions, [B'] (used
    /// detached; see <see cref="MismatchedPairs"/>).</param>
    /// <param name="referenceMismatchedLogps">log π_ref(y'|x), [B'].</param>
    /// <param name="beta">β &gt; 0.</param>
    /// <param name="desirableWeight">λ_D ≥ 0.</param>
    /// <param name="undesirableWeight">λ_U ≥ 0.</param>
    public static ObjectiveResult Compute(Tensor policyLogps, Tensor referenceLogps, Tensor desirable,
                                         Tensor policyMismatchedLogps, Tensor referenceMismatchedLogps,
                                         double beta = DefaultBeta, double desirableWeight = 1, double undesirableWeight = 1)
    {
        ObjectiveChecks.Positive(beta, "KTO beta");
        ObjectiveChecks.NonNegative(desirableWeight, "KTO desirable weight");
        ObjectiveChecks.NonNegative(undesirableWeight, "KTO undesirable weight");
        using var scope = NewDisposeScope();
        var pol = ObjectiveChecks.Vector(policyLogps, "policy log-probs");
        long b = pol.shape[0];
        ObjectiveChecks.NonEmpty(b, "KTO loss");
        var refr = ObjectiveChecks.Vector(referenceLogps, "reference log-probs", b).detach();
        var up = ObjectiveChecks.Labels(desirable, "desirable labels", b);
        var polMis = ObjectiveChecks.Vector(policyMismatchedLogps, "policy mismatched log-probs");
        ObjectiveChecks.NonEmpty(polMis.shape[0], "KTO mismatched completions");
        var refMis = ObjectiveChecks.Vector(referenceMismatchedLogps, "reference mismatched log-probs", polMis.shape[0]);

        // z is a baseline, not a target: no gradient flows through it (paper §4.1).
        var z = (polMis.detach() - refMis.detach()).mean().clamp_min(0);
        var ratio = pol - refr;
        var desirableLoss = desirableWeight * (1 - (beta * (ratio - z)).sigmoid());
        var undesirableLoss = undesirableWeight * (1 - (beta * (z - ratio)).sigmoid());
        var losses = where(up, desirableLoss, undesirableLoss);
        var loss = losses.mean();

        var rewards = beta * ratio.detach();
        var down = up.logical_not();
        var metrics = new Dictionary<string, double>
        {
            ["kl"] = z.item<float>(),
            ["rewards/chosen"] = ObjectiveChecks.MaskedMean(rewards, up),
            ["rewards/rejected"] = ObjectiveChecks.MaskedMean(rewards, down),
            ["logps/chosen"] = ObjectiveChecks.MaskedMean(pol, up),
            ["logps/rejected"] = ObjectiveChecks.MaskedMean(pol, down),
        };
        return new ObjectiveResult(loss.MoveToOuterDisposeScope(), losses.MoveToOuterDisposeScope(), metrics);
    }

    /// <summary>The mismatched pairing for z (completions shifted by one within the batch, as TRL): <see cref="PreferenceBatching.MismatchedPairs"/>.</summary>
    public static (long[] PromptIndex, long[] CompletionIndex) MismatchedPairs(int batchSize) => PreferenceBatching.MismatchedPairs(batchSize);
}
