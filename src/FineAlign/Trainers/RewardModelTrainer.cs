using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Text;
using FineAlign.Training;
using static TorchSharp.torch;

namespace FineAlign.Trainers;

/// <summary>Reward-model settings beyond the shared training options.</summary>
public sealed record RewardModelOptions
{
    /// <summary>c in c·(r_w + r_l)² (TRL center_rewards_coefficient); 0 = off.</summary>
    public double CenterRewardsCoefficient { get; init; }
    /// <summary>Subtract each pair's margin field inside the sigmoid (Llama 2's margin loss).</summary>
    public bool UseMargins { get; init; } = true;
}

/// <summary>
/// Trains a sequence reward model (<see cref="ScoredLM"/> with <see cref="HeadKind.Sequence"/>) with the Bradley–Terry
/// loss; chosen and rejected go through one forward. Checkpoints and the result are Hugging Face
/// <c>XForSequenceClassification</c> folders (<c>model/</c>) that <see cref="ScoredLM.Load"/> reads back.
/// </summary>
public static class RewardModelTrainer
{
    public static LossResult Step(ScoredLM model, PairBatch b, RewardModelOptions o)
    {
        var scores = model.SequenceScores(b.Tokens.InputIds, b.Tokens.AttentionMask);
        int n = b.Count;
        var r = BradleyTerryLoss.Compute(scores[..n], scores[n..], o.UseMargins ? b.Margins : null, o.CenterRewardsCoefficient);
        var metrics = new Dictionary<string, double>(r.Metrics)
        {
            ["rewards/chosen"] = scores[..n].detach().mean().item<float>(),
            ["rewards/rejected"] = scores[n..].detach().mean().item<float>(),
        };
        return new LossResult(r.Loss, metrics, b.Tokens.AttentionMask.sum().item<long>());
    }

    public static TrainingResult Train(ScoredLM model, TextTokenizer tokenizer, PreferenceDataset train, PreferenceDataset? eval,
        TrainingOptions options, RewardModelOptions rm, IProgress<ProgressUpdate>? progress = null, CancellationToken cancellation = default)
    {
        if (model.Kind != HeadKind.Sequence || model.NumLabels != 1)
            throw new FineAlignException("a reward model needs a sequence head with one output");
        PreferenceBatching.CheckContext(model.Config.MaxPositionEmbeddings, train, eval);
        int pad = tokenizer.PaddingId;
        var trainSource = new BatchSource<PairBatch>(train.Pairs.Count, idx => PreferenceBatching.Pairs(train.Pairs, idx, pad));
        var evalSource = eval is { Pairs.Count: > 0 } ? new BatchSource<PairBatch>(eval.Pairs.Count, idx => PreferenceBatching.Pairs(eval.Pairs, idx, pad)) : null;
        return Run(model, tokenizer, options, Training.LossUnits.NatsPerPair, b => Step(model, b, rm), trainSource, evalSource, progress, cancellation);
    }

    // The loop both reward-model objectives share: train, checkpoint the scored model, save it to model/ when done.
    private static TrainingResult Run<TBatch>(ScoredLM model, TextTokenizer tokenizer, TrainingOptions options, string lossUnit,
        Func<TBatch, LossResult> step, BatchSource<TBatch> trainSource, BatchSource<TBatch>? evalSource,
        IProgress<ProgressUpdate>? progress, CancellationToken cancellation) where TBatch : IDisposable
    {
        string Folder(string dir) => Path.Combine(dir, RunLayout.ModelFolder);
        using var trainer = new Trainer<TBatch>(model, options, b => { using (b) return step(b); }, trainSource, evalSource)
        {
            LossUnit = lossUnit,
            Progress = progress,
            SaveModelWeights = dir => model.Save(Folder(dir), tokenizer),
            LoadModelWeights = dir => ScoredLM.LoadInto(model, Folder(dir)),
        };
        var result = trainer.Train(cancellation);
        if (result.Completed) model.Save(Folder(options.OutputDir), tokenizer);
        return result;
    }

    /// <summary>One step of <see cref="TrainClassifier"/>: the score of each (prompt, completion) against its label.</summary>
    public static LossResult ClassifierStep(ScoredLM model, FeedbackBatch b)
    {
        var scores = model.SequenceScores(b.Tokens.InputIds, b.Tokens.AttentionMask);
        var r = RewardClassificationLoss.Compute(scores, b.Labels);
        return new LossResult(r.Loss, r.Metrics, b.Tokens.AttentionMask.sum().item<long>());
    }

    /// <summary>
    /// A sequence reward model from labelled single texts (thumbs-up/down or class labels, the feedback layout):
    /// <see cref="RewardClassificationLoss"/>, so the score is the log-odds of the positive label. Saved like
    /// <see cref="Train"/>'s models (usable as <c>rm:PATH</c>).
    /// </summary>
    public static TrainingResult TrainClassifier(ScoredLM model, TextTokenizer tokenizer, FeedbackDataset train, FeedbackDataset? eval,
        TrainingOptions options, IProgress<ProgressUpdate>? progress = null, CancellationToken cancellation = default)
    {
        if (model.Kind != HeadKind.Sequence || model.NumLabels != 1)
            throw new FineAlignException("a reward model needs a sequence head with one output");
        PreferenceBatching.CheckContext(model.Config.MaxPositionEmbeddings, train, eval);
        int pad = tokenizer.PaddingId;
        var trainSource = new BatchSource<FeedbackBatch>(train.Examples.Count, idx => PreferenceBatching.Feedback(train.Examples, idx, pad, false));
        var evalSource = eval is { Examples.Count: > 0 } ? new BatchSource<FeedbackBatch>(eval.Examples.Count, idx => PreferenceBatching.Feedback(eval.Examples, idx, pad, false)) : null;
        return Run(model, tokenizer, options, Training.LossUnits.NatsPerExample, b => ClassifierStep(model, b), trainSource, evalSource, progress, cancellation);
    }
}
