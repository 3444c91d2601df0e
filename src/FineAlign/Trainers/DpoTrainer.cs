using System.Text.Json;
using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Text;
using FineAlign.Training;
using static TorchSharp.torch;

namespace FineAlign.Trainers;

/// <summary>DPO settings (TRL DPOConfig names in snake_case recipes).</summary>
public sealed record DpoOptions
{
    public double Beta { get; init; } = DpoLoss.DefaultBeta;
    public DpoLossType LossType { get; init; } = DpoLossType.Sigmoid;
    /// <summary>ε for the conservative and robust losses.</summary>
    public double LabelSmoothing { get; init; }
    /// <summary>Compute the reference log-probs once before training (cached in the output folder) and free the reference.</summary>
    public bool PrecomputeReference { get; init; }
    /// <summary>TR-DPO (Gorbatovski et al. 2024, arXiv 2404.09656): every <see cref="RefModelSyncSteps"/> steps
    /// set π_ref ← α·π + (1 − α)·π_ref.</summary>
    public bool SyncReference { get; init; }
    public int RefModelSyncSteps { get; init; } = 512;
    public double RefModelMixupAlpha { get; init; } = 0.6;

    public void Validate()
    {
        if (!(Beta > 0) || double.IsInfinity(Beta)) throw new FineAlignException($"beta must be a positive number, got {Beta}");
        DpoLoss.CheckLabelSmoothing(LossType, LabelSmoothing);
        if (SyncReference && PrecomputeReference)
            throw new FineAlignException("sync_ref_model needs a live reference model; it cannot be combined with precompute_ref_log_probs");
        if (RefModelSyncSteps < 1) throw new FineAlignException($"ref_model_sync_steps must be at least 1, got {RefModelSyncSteps}");
        if (RefModelMixupAlpha is < 0 or > 1) throw new FineAlignException($"ref_model_mixup_alpha must be in [0, 1], got {RefModelMixupAlpha}");
    }
}

/// <summary>Reference log-probs of every pair, computed once (the model is then not needed during training).</summary>
public sealed record ReferenceLogps(string Key, float[] Chosen, float[] Rejected)
{
    /// <summary>Loads <paramref name="path"/> when its key matches (same pairs, same reference weights), else computes and writes it.</summary>
    public static ReferenceLogps LoadOrCompute(string path, CausalLM reference, IReadOnlyList<EncodedPair> pairs, int padId, int batchSize, out bool fromCache,
        IProgress<ProgressUpdate>? progress = null, string stage = "reference log-probs")
    {
        string key = WeightCopy.Fingerprint(reference) + "-" + PreferenceBatching.Fingerprint(pairs);
        if (File.Exists(path))
        {
            try
            {
                var cached = JsonSerializer.Deserialize<ReferenceLogps>(File.ReadAllText(path));
                if (cached is not null && cached.Key == key && cached.Chosen.Length == pairs.Count && cached.Rejected.Length == pairs.Count)
                {
                    fromCache = true;
                    return cached;
                }
            }
            catch (JsonException) { /* stale or damaged: recompute */ }
        }
        var result = Compute(reference, pairs, padId, batchSize, key, progress, stage);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        AtomicFile.WriteAllText(path, JsonSerializer.Serialize(result));
        fromCache = false;
        return result;
    }

    /// <param name="progress">Reported after every batch (stage <paramref name="stage"/>, pairs done / all): this pass over
    /// the whole data set can take minutes before the first training step.</param>
    public static ReferenceLogps Compute(CausalLM reference, IReadOnlyList<EncodedPair> pairs, int padId, int batchSize, string key = "",
        IProgress<ProgressUpdate>? progress = null, string stage = "reference log-probs")
    {
        var chosen = new float[pairs.Count];
        var rejected = new float[pairs.Count];
        bool wasTraining = reference.training;
        reference.eval();
        for (int start = 0; start < pairs.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var idx = Enumerable.Range(start, Math.Min(batchSize, pairs.Count - start)).ToArray();
            using var b = PreferenceBatching.Pairs(pairs, idx, padId);
            var lp = SequenceLogProbs.OfFrozen(reference, b.Tokens).data<float>().ToArray();
            for (int k = 0; k < idx.Length; k++) { chosen[idx[k]] = lp[k]; rejected[idx[k]] = lp[idx.Length + k]; }
            progress?.Report(new ProgressUpdate(stage, start + idx.Length, pairs.Count));
        }
        if (wasTraining) reference.train();
        return new ReferenceLogps(key, chosen, rejected);
    }

    public (Tensor Chosen, Tensor Rejected) For(IReadOnlyList<int> indices) =>
        (tensor(indices.Select(i => Chosen[i]).ToArray()), tensor(indices.Select(i => Rejected[i]).ToArray()));
}

/// <summary>
/// Direct Preference Optimization and its variants on paired preferences. Chosen and rejected go through one
/// forward (2B rows); the reference is a frozen model scored under no_grad, or log-probs precomputed once.
/// Logged metrics use TRL's names (rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
/// logps/chosen, logps/rejected; eval/… on the eval set). Output as <see cref="CausalLmTrainer"/>: <c>model/</c>.
/// </summary>
public static class DpoTrainer
{
    public const string ReferenceCacheFile = "reference_logps_train.json";
    public const string EvalReferenceCacheFile = "reference_logps_eval.json";
    public const string SyncedReferenceFolder = "ref_model";
    public const string SyncStateFile = "ref_sync.json";

    /// <summary>One DPO loss on a pair batch given the reference log-probs of its chosen and rejected rows.</summary>
    public static LossResult Step(CausalLM policy, PairBatch b, Tensor referenceChosen, Tensor referenceRejected, DpoOptions o)
    {
        var logps = SequenceLogProbs.Of(policy, b.Tokens);
        int n = b.Count;
        var r = DpoLoss.Compute(logps[..n], logps[n..], referenceChosen, referenceRejected, o.Beta, o.LossType, o.LabelSmoothing,
                                b.ChosenLengths, b.RejectedLengths);
        return new LossResult(r.Loss, r.Metrics, b.Tokens.AttentionMask.sum().item<long>());
    }

    /// <param name="reference">The reference model (frozen here); null = a frozen copy of the initial policy.
    /// With <see cref="DpoOptions.PrecomputeReference"/> it is used once and then disposed.</param>
    /// <param name="log">Receives one-line notes (cache hits, reference freed).</param>
    public static TrainingResult Train(CausalLM policy, CausalLM? reference, TextTokenizer tokenizer, PreferenceDataset train, PreferenceDataset? eval,
        TrainingOptions options, DpoOptions dpo, IProgress<ProgressUpdate>? progress = null, Action<string>? log = null, CancellationToken cancellation = default)
    {
        dpo.Validate();
        options.Validate();
        PreferenceBatching.CheckContext(policy.Config.MaxPositionEmbeddings, train, eval);
        int pad = tokenizer.PaddingId;
        reference ??= WeightCopy.FrozenCopy(policy);
        WeightCopy.Freeze(reference);
        bool hasEval = eval is { Pairs.Count: > 0 };

        ReferenceLogps? trainRef = null, evalRef = null;
        if (dpo.PrecomputeReference)
        {
            Directory.CreateDirectory(options.OutputDir);
            trainRef = ReferenceLogps.LoadOrCompute(Path.Combine(options.OutputDir, ReferenceCacheFile), reference, train.Pairs, pad, options.PerDeviceEvalBatchSize, out bool hit,
                progress, "reference log-probs (train)");
            log?.Invoke($"reference log-probs of {train.Pairs.Count} training pairs {(hit ? "read from" : "computed and cached in")} {Path.Combine(options.OutputDir, ReferenceCacheFile)}");
            if (hasEval)
                evalRef = ReferenceLogps.LoadOrCompute(Path.Combine(options.OutputDir, EvalReferenceCacheFile), reference, eval!.Pairs, pad, options.PerDeviceEvalBatchSize, out _,
                    progress, "reference log-probs (eval)");
            reference.Dispose();
            reference = null;
        }

        var trainSource = new BatchSource<PairBatch>(train.Pairs.Count, idx => PreferenceBatching.Pairs(train.Pairs, idx, pad));
        var evalSource = hasEval ? new BatchSource<PairBatch>(eval!.Pairs.Count, idx => PreferenceBatching.Pairs(eval.Pairs, idx, pad)) : null;

        Trainer<PairBatch>? trainer = null;
        long lastSync = 0;
        LossResult Run(PairBatch b, ReferenceLogps? cache)
        {
            using (b)
            {
                if (dpo.SyncReference && trainer!.Model.training)
                {
                    long step = trainer.State.GlobalStep;
                    if (step > 0 && step % dpo.RefModelSyncSteps == 0 && lastSync != step)
                    {
                        MixInto(reference!, policy, dpo.RefModelMixupAlpha);
                        lastSync = step;
                    }
                }
                var (rc, rr) = cache is not null ? cache.For(b.Indices) : Split(SequenceLogProbs.OfFrozen(reference!, b.Tokens), b.Count);
                return Step(policy, b, rc, rr, dpo);
            }
        }

        string Folder(string dir) => Path.Combine(dir, RunLayout.ModelFolder);
        trainer = new Trainer<PairBatch>(policy, options, b => Run(b, trainRef), trainSource, evalSource, b => Run(b, evalRef))
        {
            LossUnit = Training.LossUnits.NatsPerPair,
            Progress = progress,
            SaveModelWeights = dir => ModelIO.Save(policy, Folder(dir), tokenizer),
            LoadModelWeights = dir => ModelIO.LoadInto(policy, Folder(dir)),
            // TR-DPO moves the reference: it is part of the resumable state.
            SaveExtraState = dpo.SyncReference ? dir =>
            {
                ModelIO.Save(reference!, Path.Combine(dir, SyncedReferenceFolder), tokenizer);
                File.WriteAllText(Path.Combine(dir, SyncStateFile), JsonSerializer.Serialize(new Dictionary<string, long> { ["last_sync_step"] = lastSync }));
            } : null,
            LoadExtraState = dpo.SyncReference ? dir =>
            {
                ModelIO.LoadInto(reference!, Path.Combine(dir, SyncedReferenceFolder));
                lastSync = JsonSerializer.Deserialize<Dictionary<string, long>>(File.ReadAllText(Path.Combine(dir, SyncStateFile)))!["last_sync_step"];
            } : null,
        };
        try
        {
            var result = trainer.Train(cancellation);
            if (result.Completed) ModelIO.Save(policy, Folder(options.OutputDir), tokenizer);
            return result;
        }
        finally
        {
            trainer.Dispose();
            reference?.Dispose();
        }
    }

    internal static (Tensor, Tensor) Split(Tensor logps, int n) => (logps[..n], logps[n..]);

    /// <summary>π_ref ← α·π + (1 − α)·π_ref, parameter by parameter.</summary>
    public static void MixInto(CausalLM reference, CausalLM policy, double alpha)
    {
        using var _ = no_grad();
        var src = policy.state_dict();
        foreach (var (name, t) in reference.state_dict())
            t.mul_(1 - alpha).add_(src[name], alpha: alpha);
    }
}
