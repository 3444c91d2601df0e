using System.Text.Json;
using FineAlign.Data;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Text;
using FineAlign.Training;
using static TorchSharp.torch;

namespace FineAlign.Trainers;

/// <summary>A-LoL run settings on top of <see cref="TrainingOptions"/>.</summary>
public sealed record AlolTrainerOptions
{
    public AlolVariant Variant { get; init; } = AlolVariant.Alol;
    public AlolOptions Objective { get; init; } = new();
    /// <summary>Draw training examples with probability ∝ A⁺ (with replacement) instead of shuffling the kept ones.</summary>
    public bool PrioritySampling { get; init; }
    /// <summary>Full-batch AdamW steps of the value head (trunk frozen, so this is a linear regression on cached features).</summary>
    public int ValueSteps { get; init; } = 300;
    public double ValueLearningRate { get; init; } = 1e-2;
    /// <summary>Rescale rewards to [0, 1] (min–max over the data) for the reward-weighted baselines, so their
    /// example weights are non-negative (a negative weight would turn NLL into unbounded unlikelihood).</summary>
    public bool NormalizeBaselineRewards { get; init; } = true;
    /// <summary>How V_ref(x) is estimated: the paper's (default; needs <see cref="ReferenceResponseScorer"/>) or the linear head.</summary>
    public AlolValueEstimator ValueEstimator { get; init; } = AlolValueEstimator.Paper;
    public AlolPaperValueOptions PaperValue { get; init; } = new();
    /// <summary>The reward of the reference's own responses (the paper estimator's targets).</summary>
    public ResponseScorer? ReferenceResponseScorer { get; init; }
}

/// <summary>What the value/advantage stage found, before policy training.</summary>
public sealed record AlolDataReport(int Examples, int Kept, int Dropped, double MeanReward, double RewardVariance,
                                    double ValueMse, double MeanPositiveAdvantage, bool UsesAdvantage);

/// <summary>B offline examples as one right-padded batch with their rewards and advantages [B].</summary>
public sealed record OfflineBatch(IReadOnlyList<int> Indices, TokenBatch Tokens, Tensor Rewards, Tensor Advantages) : IDisposable
{
    public void Dispose() { Tokens.Dispose(); Rewards.Dispose(); Advantages.Dispose(); }
}

/// <summary>
/// Advantage-Leftover-Lunch RL (Baheti et al., ICLR 2024): (1) V_ref(x) from the frozen reference: the paper's
/// attention + MLP head trained on the reward of the reference's own responses (<see cref="AlolPaperValue"/>), or a
/// linear head fitted to the data's rewards (<see cref="AlolValueEstimator.Linear"/>); (2) A = R − V(x), examples with A ≤ 0 are dropped (counted); (3) the
/// policy is trained offline with <see cref="Alol.Loss"/> of the chosen variant, on shuffled kept examples or with
/// priority sampling ∝ A⁺. The reward-weighted baselines (weighted BC, R-LoL, R-GOLD) train on all examples.
/// Output: <c>model/</c> (HF policy), <c>value/</c> (the value head as a sequence-classification folder), <c>alol_data.json</c>.
/// </summary>
public static class AlolTrainer
{
    public const string ValueFolder = "value";
    /// <summary>The paper estimator's head in <see cref="ValueFolder"/> (TorchSharp format; it reads the reference's states).</summary>
    public const string PaperHeadFile = "attention_value_head.bin";

    public static bool UsesAdvantage(AlolVariant v) => v is AlolVariant.Alol or AlolVariant.AlolSeq or AlolVariant.AlolRefFree or AlolVariant.AlolKl;

    /// <summary>One loss evaluation: token log-probs of policy (with gradient) and reference, then <see cref="Alol.Loss"/>.</summary>
    public static LossResult Step(CausalLM policy, CausalLM reference, OfflineBatch b, AlolTrainerOptions o)
    {
        var t = b.Tokens;
        var targets = t.LossMask.logical_and(t.AttentionMask.ne(0));
        var mask = CausalLmLoss.TargetMask(targets);
        var logp = CausalLmLoss.TokenLogProbs(policy, t.InputIds, t.AttentionMask, targets);
        Tensor refLogp;
        using (no_grad()) refLogp = CausalLmLoss.TokenLogProbs(reference, t.InputIds, t.AttentionMask, targets);
        var loss = Alol.Loss(o.Variant, logp, refLogp, mask, b.Rewards, b.Advantages, o.Objective);
        using var noGrad = no_grad();
        var seq = (logp * mask).sum(1);
        var refSeq = (refLogp * mask).sum(1);
        var metrics = new Dictionary<string, double>
        {
            ["kl"] = (seq - refSeq).mean().item<float>(),
            ["importance_weight"] = Alol.SequenceWeight(seq, refSeq, o.Objective.Epsilon).mean().item<float>(),
            ["logps"] = seq.mean().item<float>(),
            ["reward"] = b.Rewards.mean().item<float>(),
            ["advantage"] = b.Advantages.mean().item<float>(),
        };
        return new LossResult(loss, metrics, t.AttentionMask.sum().item<long>());
    }

    public static OfflineBatch Batch(IReadOnlyList<EncodedOffline> data, IReadOnlyList<double> rewards, IReadOnlyList<double> advantages,
                                     IReadOnlyList<int> indices, int padId)
        => new(indices, Collator.Collate(indices.Select(i => data[i].Sequence.ToExample()).ToList(), padId),
               tensor(indices.Select(i => (float)rewards[i]).ToArray()), tensor(indices.Select(i => (float)advantages[i]).ToArray()));

    /// <summary>
    /// Fits a 1-output head on the frozen <paramref name="valueModel"/> trunk to predict the rewards from the prompt
    /// (hidden state of the last prompt token), MSE, full batch. Returns V(x) per example and the final MSE.
    /// </summary>
    public static (double[] Values, double Mse) FitValueHead(ScoredLM valueModel, IReadOnlyList<EncodedOffline> data, int padId,
                                                             int steps, double learningRate, int batchSize = 64)
    {
        var head = valueModel.named_parameters().First(p => p.name == "score.weight").parameter;
        using var scope = NewDisposeScope();
        Tensor features;
        using (no_grad())
        {
            valueModel.Trunk.eval();
            var parts = new List<Tensor>();
            for (int s = 0; s < data.Count; s += batchSize)
            {
                var rows = data.Skip(s).Take(batchSize).Select(e => new TokenizedExample(e.Sequence.Prompt, new bool[e.Sequence.Prompt.Length])).ToList();
                using var b = Collator.Collate(rows, padId);
                var hidden = valueModel.Trunk.ForwardHidden(b.InputIds, b.AttentionMask);
                var last = ScoredLM.LastTokenIndex(b.InputIds, b.AttentionMask);
                parts.Add(hidden[arange(hidden.shape[0]), last].to(float32));
            }
            features = cat(parts, 0);
        }
        var target = tensor(data.Select(e => (float)e.Reward).ToArray());
        var opt = optim.AdamW([head], learningRate, weight_decay: 0);
        for (int i = 0; i < steps; i++)
        {
            using var inner = NewDisposeScope();
            opt.zero_grad();
            var mse = (features.matmul(head.t()).squeeze(-1) - target).pow(2).mean();
            mse.backward();
            opt.step();
        }
        using (no_grad())
        {
            var v = features.matmul(head.t()).squeeze(-1);
            double mse = (v - target).pow(2).mean().item<float>();
            return (v.data<float>().Select(x => (double)x).ToArray(), mse);
        }
    }

    /// <summary>Replaces the data's rewards with a reward source's Σ_t r_t of each response (sequence or token-level sources).</summary>
    public static OfflineDataset Rescore(OfflineDataset data, RewardSource reward, TextTokenizer tokenizer, int batchSize = 32)
    {
        var rewards = new List<double>();
        for (int s = 0; s < data.Examples.Count; s += batchSize)
        {
            var chunk = data.Examples.Skip(s).Take(batchSize).ToList();
            using var scope = NewDisposeScope();
            var (ids, mask) = Decoding.RightPad(chunk.Select(e => e.Sequence.Completion).ToList(), tokenizer.PaddingId);
            using var tr = reward.Compute(new RewardBatch(ids, mask, null,
                chunk.Select(e => tokenizer.Decode(e.Sequence.Prompt)).ToList(), chunk.Select(e => tokenizer.Decode(e.Sequence.Completion)).ToList()));
            rewards.AddRange(tr.SequenceTotals().data<float>().Select(x => (double)x));
        }
        return data.WithRewards(rewards);
    }

    /// <param name="reference">Frozen reference (owned, disposed here); null = a frozen copy of the initial policy.</param>
    public static (TrainingResult Result, AlolDataReport Data) Train(CausalLM policy, CausalLM? reference, TextTokenizer tokenizer,
        OfflineDataset train, TrainingOptions options, AlolTrainerOptions alol, Action<string>? log = null,
        IProgress<ProgressUpdate>? progress = null, CancellationToken cancellation = default)
    {
        int pad = tokenizer.PaddingId, context = policy.Config.MaxPositionEmbeddings;
        var tooLong = train.Examples.FirstOrDefault(e => e.Sequence.Length > context);
        if (tooLong is not null)
            throw new FineAlignException($"{train.Source}:{tooLong.Line}: the example has {tooLong.Sequence.Length} tokens but the model's context is {context}; lower --max-length");
        var missing = train.Examples.FirstOrDefault(e => !double.IsFinite(e.Reward));
        if (missing is not null) throw new DataFormatException(train.Source, missing.Line, "reward", "missing or not finite");

        reference ??= WeightCopy.FrozenCopy(policy);
        WeightCopy.Freeze(reference);
        var data = train.Examples;
        var rewards = data.Select(e => e.Reward).ToArray();
        try
        {
            // (1) value estimate on the frozen reference, (2) advantages.
            ScoredLM? valueModel = null;
            AlolPaperValue.Fit? paper = null;
            double[] values;
            double mse;
            if (alol.ValueEstimator == AlolValueEstimator.Paper)
            {
                var scorer = alol.ReferenceResponseScorer ?? throw new FineAlignException(
                    "the paper's value estimate needs a reward for the reference's own responses (--reward); or use --value-estimator linear");
                paper = AlolPaperValue.Estimate(reference, tokenizer, data, scorer, alol.PaperValue, options.Seed, progress);
                (values, mse) = (paper.Values, paper.ValidationMse);
                log?.Invoke($"value (paper): attention + MLP head on {paper.ValidationCount} validation prompts, the reference's own responses scored: " +
                            $"MSE {mse:F4} (their reward variance {paper.ValidationRewardVariance:F4}); mean V {values.Average():F4}");
            }
            else
            {
                valueModel = new ScoredLM(reference, HeadKind.Sequence, 1, options.Seed);
                (values, mse) = FitValueHead(valueModel, data, pad, alol.ValueSteps, alol.ValueLearningRate);
            }
            var advantages = rewards.Select((r, i) => r - values[i]).ToArray();
            double meanR = rewards.Average(), varR = rewards.Select(r => (r - meanR) * (r - meanR)).Average();
            bool usesA = UsesAdvantage(alol.Variant);
            int[] kept = usesA ? Enumerable.Range(0, data.Count).Where(i => advantages[i] > 0).ToArray() : Enumerable.Range(0, data.Count).ToArray();
            if (kept.Length == 0) throw new FineAlignException($"{train.Source}: no example has a positive advantage (R − V(x) > 0); nothing to train on");
            var report = new AlolDataReport(data.Count, kept.Length, data.Count - kept.Length, meanR, varR, mse,
                kept.Length == 0 ? 0 : kept.Average(i => Math.Max(advantages[i], 0)), usesA);
            log?.Invoke($"value head: MSE {mse:F4} (reward variance {varR:F4}); " +
                        (usesA ? $"kept {kept.Length} of {data.Count} examples with A > 0, dropped {data.Count - kept.Length}" : $"variant {alol.Variant} trains on all {data.Count} examples"));

            var batchRewards = rewards;
            if (!usesA && alol.NormalizeBaselineRewards)
            {
                double lo = rewards.Min(), hi = rewards.Max();
                batchRewards = rewards.Select(r => hi > lo ? (r - lo) / (hi - lo) : 1.0).ToArray();
            }

            // Priority sampling: a seeded draw ∝ A⁺ fixes the example list up front, so resume replays the same order.
            int[] order = kept;
            if (alol.PrioritySampling)
            {
                if (!usesA) throw new FineAlignException($"priority sampling needs advantages; variant {alol.Variant} has none");
                var sampler = new PrioritySampler(advantages, options.Seed);
                order = sampler.Draw(kept.Length);
            }
            Directory.CreateDirectory(options.OutputDir);
            File.WriteAllText(Path.Combine(options.OutputDir, "alol_data.json"), JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }));
            if (valueModel is not null) valueModel.Save(Path.Combine(options.OutputDir, ValueFolder), tokenizer);
            else
            {
                Directory.CreateDirectory(Path.Combine(options.OutputDir, ValueFolder));
                paper!.Head.save(Path.Combine(options.OutputDir, ValueFolder, PaperHeadFile));
                paper.Head.Dispose();
            }

            var source = new BatchSource<OfflineBatch>(order.Length,
                idx => Batch(data, batchRewards, advantages, idx.Select(k => order[k]).ToList(), pad));
            string Folder(string dir) => Path.Combine(dir, RunLayout.ModelFolder);
            using var trainer = new Trainer<OfflineBatch>(policy, options, b => { using (b) return Step(policy, reference, b, alol); }, source)
            {
                Progress = progress,
                SaveModelWeights = dir => ModelIO.Save(policy, Folder(dir), tokenizer),
                LoadModelWeights = dir => ModelIO.LoadInto(policy, Folder(dir)),
            };
            var result = trainer.Train(cancellation);
            if (result.Completed) ModelIO.Save(policy, Folder(options.OutputDir), tokenizer);
            return (result, report);
        }
        finally
        {
            reference.Dispose();
        }
    }
}
