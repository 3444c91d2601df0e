using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Text;
using FineAlign.Training;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FineAlign.Trainers;

/// <summary>A tokenised discriminator example: BOS + prompt ids, response ids and one label per response token.</summary>
public sealed record TlcrExample(int[] PromptIds, int[] ResponseIds, sbyte[] Labels, TlcrSide Side = TlcrSide.Other);

/// <summary>A padded batch: input ids/attention mask [B, L]; targets [B, L] = P(positive) (1, 0 or ½); ResponseMask = loss weight
/// (1 on labelled response tokens, the neutral weight on neutral ones, 0 elsewhere); Labels = −1/0/+1; Sides = each row's <see cref="TlcrSide"/> [B].</summary>
public sealed record TlcrBatch(Tensor InputIds, Tensor AttentionMask, Tensor Targets, Tensor ResponseMask, Tensor Labels, Tensor Sides);

/// <summary>Token metrics over the non-neutral tokens: accuracy, F1 of the positive class, and the majority-class accuracy for reference.</summary>
public sealed record TlcrMetrics(double Accuracy, double F1, double MajorityBaseline, long LabelledTokens, double Loss);

/// <summary>
/// TLCR discriminator training (Yoon et al. 2024, §3.2): a 2-way token head on an LM trunk, soft-target
/// cross-entropy per token averaged over a sequence's response tokens — positive target [0, 1], negative [1, 0],
/// neutral [½, ½] (the paper keeps neutral tokens as uncertain rather than dropping them) — then averaged over the
/// sequences of each side of the revision pairs, the sides summed (<see cref="TlcrLoss"/>).
/// The neutral tokens' weight (1 = the paper) can be lowered: in short revisions they are ~90 % of the tokens and
/// their ½ target dominates the loss of a small model.
/// </summary>
public static class TlcrTrainer
{
    public const string ModelFolder = RunLayout.ModelFolder;

    public static TlcrExample Encode(TextTokenizer tokenizer, LabelledResponse r)
    {
        var prompt = tokenizer.Encode(r.Prompt);
        if (tokenizer.AddBos && tokenizer.BosId is int bos) prompt = prompt.Prepend(bos).ToArray();
        var side = r.Kind switch { "revised" => TlcrSide.Revised, "original" => TlcrSide.Original, _ => TlcrSide.Other };
        return new TlcrExample(prompt, r.ResponseIds, r.Labels, side);
    }

    /// <summary>Right-padded prompt + response; labels sit on the response tokens (p_t = D(+ | x, y_≤t)).</summary>
    public static TlcrBatch Collate(IReadOnlyList<TlcrExample> items, int pad, double neutralWeight = 1.0)
    {
        int b = items.Count, len = items.Max(e => e.PromptIds.Length + e.ResponseIds.Length);
        // Per response token: loss weight, label and P(positive) target; 0 on the prompt and on padding.
        static IReadOnlyList<float> OnResponse(TlcrExample e, Func<sbyte, float> f) => new float[e.PromptIds.Length].Concat(e.Labels.Select(f)).ToArray();
        var ids = PadRows.Rows(items.Select(e => (IReadOnlyList<long>)e.PromptIds.Concat(e.ResponseIds).Select(x => (long)x).ToArray()).ToList(), len, (long)pad);
        var mask = PadRows.Mask(items.Select(e => e.PromptIds.Length + e.ResponseIds.Length).ToList(), len, 1L);
        var resp = PadRows.Rows(items.Select(e => OnResponse(e, l => l == 0 ? (float)neutralWeight : 1f)).ToList(), len, 0f);
        var labels = PadRows.Rows(items.Select(e => OnResponse(e, l => l)).ToList(), len, 0f);
        var targets = PadRows.Rows(items.Select(e => OnResponse(e, l => l > 0 ? 1f : l < 0 ? 0f : 0.5f)).ToList(), len, 0f);
        var shape = new long[] { b, len };
        return new TlcrBatch(tensor(ids, shape), tensor(mask, shape), tensor(targets, shape), tensor(resp, shape), tensor(labels, shape),
            tensor(items.Select(e => (long)e.Side).ToArray()));
    }

    /// <summary>P(positive) at every position, [B, L].</summary>
    public static Tensor PositiveProbabilities(ScoredLM discriminator, Tensor inputIds, Tensor attentionMask)
        => F.softmax(discriminator.TokenScores(inputIds, attentionMask).to(float32), -1).select(-1, 1);

    /// <summary>
    /// Cuts responses (and their labels) at the end so prompt + response fits <paramref name="context"/>; examples whose prompt
    /// alone fills the context are dropped. <paramref name="changed"/> counts both.
    /// </summary>
    public static List<TlcrExample> FitContext(IReadOnlyList<TlcrExample> examples, int context, out int changed)
    {
        var list = new List<TlcrExample>(examples.Count);
        changed = 0;
        foreach (var e in examples)
        {
            int room = context - e.PromptIds.Length;
            if (e.ResponseIds.Length <= room) { list.Add(e); continue; }
            changed++;
            if (room >= 1) list.Add(new TlcrExample(e.PromptIds, e.ResponseIds[..room], e.Labels[..room]));
        }
        return list;
    }

    public static TrainingResult Train(ScoredLM discriminator, TextTokenizer tokenizer, IReadOnlyList<TlcrExample> train,
        IReadOnlyList<TlcrExample>? eval, TrainingOptions options, IProgress<ProgressUpdate>? progress = null, CancellationToken cancellation = default,
        double neutralWeight = 1.0)
    {
        if (!(neutralWeight >= 0 && neutralWeight <= 1)) throw new FineAlignException($"neutral weight must be in [0, 1], got {neutralWeight}");
        if (discriminator.Kind != HeadKind.Token || discriminator.NumLabels != 2)
            throw new FineAlignException($"a TLCR discriminator needs a token head with 2 labels (got {discriminator.Kind} with {discriminator.NumLabels})");
        if (train.Count == 0) throw new FineAlignException("no labelled responses to train the discriminator on");
        int context = discriminator.Config.MaxPositionEmbeddings;
        var tooLong = train.Concat(eval ?? []).FirstOrDefault(e => e.PromptIds.Length + e.ResponseIds.Length > context);
        if (tooLong is not null)
            throw new FineAlignException($"a labelled example has {tooLong.PromptIds.Length + tooLong.ResponseIds.Length} tokens but the model's context is {context}");
        int pad = tokenizer.PaddingId;
        var trainSource = new BatchSource<TlcrBatch>(train.Count, idx => Collate(idx.Select(i => train[i]).ToList(), pad, neutralWeight));
        var evalSource = eval is { Count: > 0 } ? new BatchSource<TlcrBatch>(eval.Count, idx => Collate(idx.Select(i => eval[i]).ToList(), pad, neutralWeight)) : null;

        LossResult Step(TlcrBatch b)
        {
            var scores = discriminator.TokenScores(b.InputIds, b.AttentionMask);
            var loss = TlcrLoss.Compute(scores, b.Targets, b.ResponseMask, b.Sides);
            var (correct, total, _, _, _) = Counts(scores.detach(), b.Labels);
            var metrics = new Dictionary<string, double> { ["token_accuracy"] = total == 0 ? 0 : (double)correct / total };
            return new LossResult(loss, metrics, (long)b.ResponseMask.sum().item<float>());
        }

        using var trainer = new Trainer<TlcrBatch>(discriminator, options, Step, trainSource, evalSource)
        {
            Progress = progress,
            SaveModelWeights = dir => discriminator.Save(Path.Combine(dir, ModelFolder), tokenizer),
            LoadModelWeights = dir => ScoredLM.LoadInto(discriminator, Path.Combine(dir, ModelFolder)),
        };
        var result = trainer.Train(cancellation);
        if (result.Completed) discriminator.Save(Path.Combine(options.OutputDir, ModelFolder), tokenizer);
        return result;
    }

    /// <summary>Accuracy/F1 over non-neutral tokens (predicted positive when p &gt; ½), in eval mode without grad.</summary>
    public static TlcrMetrics Evaluate(ScoredLM discriminator, IReadOnlyList<TlcrExample> data, int pad, int batchSize = 32)
    {
        bool wasTraining = discriminator.training;
        discriminator.eval();
        try
        {
            using var _ = no_grad();
            long correct = 0, total = 0, tp = 0, fp = 0, fn = 0, positives = 0; double loss = 0; int batches = 0;
            for (int s = 0; s < data.Count; s += batchSize)
            {
                using var scope = NewDisposeScope();
                var b = Collate(data.Skip(s).Take(batchSize).ToList(), pad);
                var scores = discriminator.TokenScores(b.InputIds, b.AttentionMask);
                loss += TlcrLoss.Compute(scores, b.Targets, b.ResponseMask, b.Sides).item<float>(); batches++;
                var (c, t, tpi, fpi, fni) = Counts(scores, b.Labels);
                correct += c; total += t; tp += tpi; fp += fpi; fn += fni;
                positives += b.Labels.eq(1).sum().item<long>();
            }
            double f1 = tp == 0 ? 0 : 2.0 * tp / (2.0 * tp + fp + fn);
            double majority = total == 0 ? 0 : Math.Max(positives, total - positives) / (double)total;
            return new TlcrMetrics(total == 0 ? 0 : (double)correct / total, f1, majority, total, batches == 0 ? 0 : loss / batches);
        }
        finally { discriminator.train(wasTraining); }
    }

    private static (long Correct, long Total, long Tp, long Fp, long Fn) Counts(Tensor scores, Tensor labels)
    {
        using var scope = NewDisposeScope();
        var predPos = scores.select(-1, 1).gt(scores.select(-1, 0));
        var isPos = labels.eq(1); var isNeg = labels.eq(-1);
        var labelled = isPos.logical_or(isNeg);
        long correct = predPos.logical_and(isPos).logical_or(predPos.logical_not().logical_and(isNeg)).sum().item<long>();
        long tp = predPos.logical_and(isPos).sum().item<long>();
        long fp = predPos.logical_and(isNeg).sum().item<long>();
        long fn = predPos.logical_not().logical_and(isPos).sum().item<long>();
        return (correct, labelled.sum().item<long>(), tp, fp, fn);
    }
}
