using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Text;
using FineAlign.Training;
using static TorchSharp.torch;

namespace FineAlign.Trainers;

/// <summary>BCO settings (TRL BCOConfig names).</summary>
public sealed record BcoOptions
{
    public double Beta { get; init; } = BcoLoss.DefaultBeta;
    /// <summary>Weight thumbs-down examples by UDM density ratios (a logistic regression on prompt embeddings).</summary>
    public bool Udm { get; init; }
    /// <summary>Prompts per side used to fit the UDM classifier (TRL: 1024).</summary>
    public int UdmMaxPerSide { get; init; } = Objectives.Udm.DefaultMaxPerSide;
}

/// <summary>
/// Binary Classifier Optimization on thumbs-up/down examples: logit βΔ − δ with δ the running mean of the implicit
/// rewards (<see cref="RewardShift"/>), saved in every checkpoint (<see cref="RewardShift.FileName"/>) and in the
/// output folder, restored on resume. Optional UDM weights are computed once before training from mean-pooled
/// prompt hidden states of the reference model. Metrics: "delta" plus TRL's rewards/… and logps/… names.
/// </summary>
public static class BcoTrainer
{
    /// <summary>One batch's loss and the reward shift after it (unchanged when <paramref name="train"/> is false).</summary>
    public static (LossResult Loss, RewardShift Shift) Step(CausalLM policy, CausalLM reference, FeedbackBatch b, RewardShift shift, BcoOptions o, Tensor? weights, bool train)
    {
        var pol = SequenceLogProbs.Of(policy, b.Tokens);
        var refLp = SequenceLogProbs.OfFrozen(reference, b.Tokens);
        var (r, next) = BcoLoss.Compute(pol, refLp, b.Labels, shift, o.Beta, weights, updateShift: train);
        return (new LossResult(r.Loss, r.Metrics, b.Tokens.AttentionMask.sum().item<long>()), next);
    }

    /// <summary>Mean over prompt tokens of the model's final hidden states, [N, hidden] (UDM's prompt embedding).</summary>
    public static Tensor PromptEmbeddings(CausalLM model, IReadOnlyList<EncodedFeedback> data, int padId, int batchSize)
    {
        var parts = new List<Tensor>();
        using var noGrad = no_grad();
        for (int start = 0; start < data.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var rows = data.Skip(start).Take(batchSize).Select(e => new TokenizedExample(e.Sequence.Prompt, new bool[e.Sequence.Prompt.Length])).ToList();
            using var b = Collator.Collate(rows, padId);
            var h = model.ForwardHidden(b.InputIds, b.AttentionMask);
            var m = b.AttentionMask.to(h.dtype).unsqueeze(-1);
            parts.Add(((h * m).sum(1) / m.sum(1).clamp_min(1)).to(ScalarType.Float32).MoveToOuterDisposeScope());
        }
        var all = cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return all;
    }

    /// <summary>Fits UDM on the training prompts and returns each training example's loss weight.</summary>
    public static float[] UdmWeights(CausalLM reference, FeedbackDataset train, int padId, int batchSize, BcoOptions o, long seed, out Udm udm)
    {
        using var scope = NewDisposeScope();
        var emb = PromptEmbeddings(reference, train.Examples, padId, batchSize);
        var labels = tensor(train.Examples.Select(e => e.Label).ToArray());
        udm = Udm.Fit(emb[labels], emb[labels.logical_not()], maxPerSide: o.UdmMaxPerSide, seed: seed);
        return udm.Weights(emb, labels).data<float>().ToArray();
    }

    /// <param name="reference">Frozen reference (owned and disposed here); null = a frozen copy of the initial policy.</param>
    /// <returns>The training result and the final reward shift δ (also saved as <see cref="RewardShift.FileName"/>).</returns>
    public static (TrainingResult Result, RewardShift Shift) Train(CausalLM policy, CausalLM? reference, TextTokenizer tokenizer, FeedbackDataset train, FeedbackDataset? eval,
        TrainingOptions options, BcoOptions bco, IProgress<ProgressUpdate>? progress = null, Action<string>? log = null,
        CancellationToken cancellation = default)
    {
        var shift = new RewardShift(); // a resumed checkpoint replaces it
        PreferenceBatching.CheckContext(policy.Config.MaxPositionEmbeddings, train, eval);
        int pad = tokenizer.PaddingId;
        reference ??= WeightCopy.FrozenCopy(policy);
        WeightCopy.Freeze(reference);
        try
        {
            float[]? weights = null;
            if (bco.Udm)
            {
                weights = UdmWeights(reference, train, pad, options.PerDeviceEvalBatchSize, bco, options.Seed, out var udm);
                var down = train.Examples.Select((e, i) => (e, i)).Where(t => !t.e.Label).Select(t => weights[t.i]).ToArray();
                log?.Invoke($"UDM classifier fitted in {udm.Iterations} Newton steps; thumbs-down weights mean {down.Average():F3}, " +
                            $"range [{down.Min():F3}, {down.Max():F3}] (clamped to [{Udm.MinWeight}, {Udm.MaxWeight}])");
            }
            var trainSource = new BatchSource<FeedbackBatch>(train.Examples.Count, idx => PreferenceBatching.Feedback(train.Examples, idx, pad, false));
            var evalSource = eval is { Examples.Count: > 0 } ? new BatchSource<FeedbackBatch>(eval.Examples.Count, idx => PreferenceBatching.Feedback(eval.Examples, idx, pad, false)) : null;
            string Folder(string dir) => Path.Combine(dir, RunLayout.ModelFolder);
            using var trainer = new Trainer<FeedbackBatch>(policy, options,
                b =>
                {
                    using (b)
                    {
                        var (loss, next) = Step(policy, reference, b, shift, bco, weights is null ? null : tensor(b.Indices.Select(i => weights[i]).ToArray()), true);
                        shift = next;
                        return loss;
                    }
                },
                trainSource, evalSource,
                b => { using (b) return Step(policy, reference, b, shift, bco, null, false).Loss; })
            {
                LossUnit = Training.LossUnits.NatsPerExample,
                Progress = progress,
                SaveModelWeights = dir => ModelIO.Save(policy, Folder(dir), tokenizer),
                LoadModelWeights = dir => ModelIO.LoadInto(policy, Folder(dir)),
                SaveExtraState = dir => shift.Save(Path.Combine(dir, RewardShift.FileName)),
                LoadExtraState = dir =>
                {
                    string path = Path.Combine(dir, RewardShift.FileName);
                    if (!File.Exists(path)) throw new FineAlignException($"{path}: missing BCO reward shift in checkpoint (was it written by another trainer?)");
                    shift = RewardShift.Load(path);
                },
            };
            var result = trainer.Train(cancellation);
            if (result.Completed)
            {
                ModelIO.Save(policy, Folder(options.OutputDir), tokenizer);
                shift.Save(Path.Combine(options.OutputDir, RewardShift.FileName));
            }
            return (result, shift);
        }
        finally
        {
            reference.Dispose();
        }
    }
}
