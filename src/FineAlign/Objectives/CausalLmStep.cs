using FineAlign.Models;
using static TorchSharp.torch;

namespace FineAlign.Objectives;

/// <summary>
/// The pretraining/SFT step: forward the batch, masked next-token cross-entropy on the target
/// tokens. The SFT trainer wraps it as <c>b =&gt; step.Compute(b.InputIds, b.AttentionMask, b.LossMask)</c>.
/// </summary>
public sealed class CausalLmStep
{
    public CausalLmStep(CausalLM model) => Model = model;

    public CausalLM Model { get; }

    /// <param name="inputIds">[B, T] int64.</param>
    /// <param name="attentionMask">[B, T], 1 = real token, 0 = padding (or null: no padding).</param>
    /// <param name="lossMask">[B, T] bool, true where the token is a training target; padding is
    /// excluded even if the mask says otherwise.</param>
    public LossResult Compute(Tensor inputIds, Tensor? attentionMask, Tensor lossMask)
    {
        var targets = attentionMask is null ? lossMask.to(ScalarType.Bool) : lossMask.to(ScalarType.Bool).logical_and(attentionMask.ne(0));
        var loss = CausalLmLoss.Loss(Model, inputIds, attentionMask, targets);
        long tokens = attentionMask is null ? inputIds.numel() : attentionMask.ne(0).sum().item<long>();
        return new LossResult(loss, new Dictionary<string, double> { ["num_target_tokens"] = CausalLmLoss.CountTargets(targets) }, tokens);
    }
}
