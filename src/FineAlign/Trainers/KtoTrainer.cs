using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Text;
using FineAlign.Training;

namespace FineAlign.Trainers;

/// <summary>KTO settings (TRL KTOConfig names).</summary>
public sealed record KtoOptions
{
    public double Beta { get; init; } = KtoLoss.DefaultBeta;
    public double DesirableWeight { get; init; } = 1;
    public double UndesirableWeight { get; init; } = 1;
}

/// <summary>
/// Kahneman–Tversky Optimization on unpaired thumbs-up/down examples. Each batch also scores, without gradient,
/// every prompt with the previous example's completion (policy and reference) for the KL reference point z
/// (logged as "kl"). Output as <see cref="CausalLmTrainer"/>: <c>model/</c>.
/// </summary>
public static class KtoTrainer
{
    public static LossResult Step(CausalLM policy, CausalLM reference, FeedbackBatch b, KtoOptions o)
    {
        if (b.Mismatched is null) throw new ArgumentException("KTO needs the mismatched rows (FeedbackBatch with withMismatched: true)");
        var pol = SequenceLogProbs.Of(policy, b.Tokens);
        var refLp = SequenceLogProbs.OfFrozen(reference, b.Tokens);
        var polMis = SequenceLogProbs.OfFrozen(policy, b.Mismatched);   // no gradient: z is a baseline
        var refMis = SequenceLogProbs.OfFrozen(reference, b.Mismatched);
        var r = KtoLoss.Compute(pol, refLp, b.Labels, polMis, refMis, o.Beta, o.DesirableWeight, o.UndesirableWeight);
        return new LossResult(r.Loss, r.Metrics, b.Tokens.AttentionMask.sum().item<long>());
    }

    /// <param name="reference">Frozen reference (owned and disposed here); null = a frozen copy of the initial policy.</param>
    public static TrainingResult Train(CausalLM policy, CausalLM? reference, TextTokenizer tokenizer, FeedbackDataset train, FeedbackDataset? eval,
        TrainingOptions options, KtoOptions kto, IProgress<ProgressUpdate>? progress = null, CancellationToken cancellation = default)
    {
        PreferenceBatching.CheckContext(policy.Config.MaxPositionEmbeddings, train, eval);
        int pad = tokenizer.PaddingId, context = policy.Config.MaxPositionEmbeddings;
        reference ??= WeightCopy.FrozenCopy(policy);
        WeightCopy.Freeze(reference);
        var trainSource = new BatchSource<FeedbackBatch>(train.Examples.Count, idx => PreferenceBatching.Feedback(train.Examples, idx, pad, true, context));
        var evalSource = eval is { Examples.Count: > 0 } ? new BatchSource<FeedbackBatch>(eval.Examples.Count, idx => PreferenceBatching.Feedback(eval.Examples, idx, pad, true, context)) : null;
        string Folder(string dir) => Path.Combine(dir, RunLayout.ModelFolder);
        try
        {
            using var trainer = new Trainer<FeedbackBatch>(policy, options, b => { using (b) return Step(policy, reference, b, kto); }, trainSource, evalSource)
            {
                LossUnit = Training.LossUnits.KtoValue,
                Progress = progress,
                SaveModelWeights = dir => ModelIO.Save(policy, Folder(dir), tokenizer),
                LoadModelWeights = dir => ModelIO.LoadInto(policy, Folder(dir)),
            };
            var result = trainer.Train(cancellation);
            if (result.Completed) ModelIO.Save(policy, Folder(options.OutputDir), tokenizer);
            return result;
        }
        finally
        {
            reference.Dispose();
        }
    }
}
