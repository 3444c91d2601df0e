using FineAlign.Data;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Text;
using static TorchSharp.torch;

namespace FineAlign.Trainers;

/// <summary>How A-LoL estimates V_ref(x) for A = R − V_ref(x).</summary>
public enum AlolValueEstimator
{
    /// <summary>The paper's: an attention + MLP head on the frozen reference's prompt states, trained to predict the reward
    /// of the reference's own (greedy) responses on a validation split of prompts.</summary>
    Paper,
    /// <summary>A linear head on the reference's last prompt state, fitted to the offline data's rewards.</summary>
    Linear,
}

/// <summary>Scores responses the reference generated: one reward per response.</summary>
public delegate double[] ResponseScorer(IReadOnlyList<int[]> prompts, IReadOnlyList<GeneratedSequence> responses);

/// <summary>Settings of the paper's estimator (reference code: 10 epochs, batch 16, best epoch by MSE, greedy responses).</summary>
public sealed record AlolPaperValueOptions
{
    /// <summary>Distinct prompts of the validation split whose reference responses are generated and scored.</summary>
    public int ValidationPrompts { get; init; } = 128;
    public int MaxNewTokens { get; init; } = 64;
    public int Epochs { get; init; } = 10;
    public int BatchSize { get; init; } = 16;
    public double LearningRate { get; init; } = 1e-3;
}

/// <summary>
/// The paper's value estimate (Baheti et al., ICLR 2024, §2 and the reference code's
/// train_value_function_on_val_predictions): V_ref(x) is the expected reward of the reference policy's own response, so
/// its targets come from the reference, not from the offline data (whose responses were written by someone else).
/// Our validation split is a seeded sample of the data's distinct prompts (the paper uses a separate dev set of prompts).
/// </summary>
public static class AlolPaperValue
{
    public sealed record Fit(double[] Values, double ValidationMse, double ValidationRewardVariance, int ValidationCount, AttentionValueHead Head);

    public static Fit Estimate(CausalLM reference, TextTokenizer tokenizer, IReadOnlyList<EncodedOffline> data, ResponseScorer scorer,
        AlolPaperValueOptions o, int seed, IProgress<ProgressUpdate>? progress = null)
    {
        int pad = tokenizer.PaddingId;
        var rng = new Random(seed);
        var prompts = data.Select(e => e.Sequence.Prompt).DistinctBy(p => string.Join(',', p)).OrderBy(_ => rng.Next())
            .Take(Math.Max(2, o.ValidationPrompts)).ToList();
        int context = reference.Config.MaxPositionEmbeddings;
        prompts = prompts.Select(p => p.Length + o.MaxNewTokens <= context ? p : p[^Math.Max(1, context - o.MaxNewTokens)..]).ToList();

        // 1. The reference's own greedy responses to the validation prompts, scored.
        var rewards = new List<double>();
        for (int s = 0; s < prompts.Count; s += o.BatchSize)
        {
            var chunk = prompts.Skip(s).Take(o.BatchSize).ToList();
            var generated = TextGenerator.Generate(reference, chunk, new GenerationOptions { MaxNewTokens = o.MaxNewTokens, DoSample = false, Seed = seed }, tokenizer);
            var r = scorer(chunk, generated);
            if (r.Length != chunk.Count || r.Any(x => !double.IsFinite(x)))
                throw new FineAlignException("the reward of the reference's responses is missing or not finite");
            rewards.AddRange(r);
            progress?.Report(new ProgressUpdate("value: reference responses", s + chunk.Count, prompts.Count));
        }
        double lo = rewards.Min(), hi = rewards.Max(), margin = Math.Max(0.05 * (hi - lo), 1e-3);
        double mean = rewards.Average(), variance = rewards.Average(x => (x - mean) * (x - mean));

        // 2. The head on the frozen reference's last-layer prompt states (cached: the reference does not change).
        var states = prompts.Select(p => PromptStates(reference, [p], pad).States[0]).ToList();   // [T_i, H] each
        var head = new AttentionValueHead((int)states[0].shape[1], lo - margin, hi + margin, seed);
        var opt = optim.AdamW(head.parameters(), o.LearningRate, weight_decay: 0);
        var order = Enumerable.Range(0, prompts.Count).ToArray();
        double best = double.PositiveInfinity;
        Dictionary<string, Tensor>? bestState = null;
        for (int epoch = 0; epoch < o.Epochs; epoch++)
        {
            head.train();
            rng.Shuffle(order);
            double sum = 0; int batches = 0;
            for (int s = 0; s < order.Length; s += o.BatchSize)
            {
                using var scope = NewDisposeScope();
                var idx = order.Skip(s).Take(o.BatchSize).ToArray();
                var (x, m) = Pad(idx.Select(i => states[i]).ToList());
                opt.zero_grad();
                var loss = (head.forward(x, m) - tensor(idx.Select(i => (float)rewards[i]).ToArray())).pow(2).mean();
                loss.backward();
                opt.step();
                sum += loss.item<float>(); batches++;
            }
            // As the reference code: keep the epoch with the lowest mean training MSE on the validation split.
            if (sum / batches < best)
            {
                best = sum / batches;
                foreach (var t in bestState?.Values ?? Enumerable.Empty<Tensor>()) t.Dispose();
                bestState = head.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
            }
            progress?.Report(new ProgressUpdate("value: head epochs", epoch + 1, o.Epochs, sum / batches));
        }
        opt.Dispose();
        head.load_state_dict(bestState!);
        foreach (var t in bestState!.Values) t.Dispose();
        foreach (var t in states) t.Dispose();
        head.eval();

        // 3. V_ref(x) of every training prompt, and the head's MSE on the validation targets (eval mode).
        double mse;
        using (no_grad())
        {
            var fitted = Values(head, reference, prompts, pad, o.BatchSize);
            mse = fitted.Select((v, i) => (v - rewards[i]) * (v - rewards[i])).Average();
        }
        var values = Values(head, reference, data.Select(e => e.Sequence.Prompt).ToList(), pad, o.BatchSize);
        return new Fit(values, mse, variance, prompts.Count, head);
    }

    /// <summary>V of each prompt (no grad, batches of <paramref name="batchSize"/>).</summary>
    public static double[] Values(AttentionValueHead head, CausalLM reference, IReadOnlyList<int[]> prompts, int pad, int batchSize)
    {
        var result = new double[prompts.Count];
        using var noGrad = no_grad();
        for (int s = 0; s < prompts.Count; s += batchSize)
        {
            using var scope = NewDisposeScope();
            var chunk = prompts.Skip(s).Take(batchSize).ToList();
            var (states, mask) = PromptStates(reference, chunk, pad);
            var (x, m) = Pad(states.Select((t, i) => t).ToList());
            var v = head.forward(x, m).data<float>().ToArray();
            for (int i = 0; i < v.Length; i++) result[s + i] = v[i];
        }
        return result;
    }

    /// <summary>Scores responses with a reward source (Σ_t r_t for token-level sources).</summary>
    public static ResponseScorer FromRewardSource(RewardSource source, TextTokenizer tokenizer) => (prompts, responses) =>
    {
        using var scope = NewDisposeScope();
        var (ids, mask) = Decoding.RightPad(responses.Select(r => r.Tokens).ToList(), tokenizer.PaddingId);
        using var tr = source.Compute(new RewardBatch(ids, mask, null, prompts.Select(p => tokenizer.Decode(p)).ToList(),
            responses.Select(r => r.Text).ToList()));
        return tr.SequenceTotals().data<float>().Select(x => (double)x).ToArray();
    };

    // The frozen model's last-layer states of each prompt, unpadded: [T_i, H] per prompt (float32, detached).
    private static (List<Tensor> States, Tensor? Mask) PromptStates(CausalLM reference, IReadOnlyList<int[]> prompts, int pad)
    {
        using var noGrad = no_grad();
        bool wasTraining = reference.training;
        reference.eval();
        using var b = Collator.Collate(prompts.Select(p => new TokenizedExample(p, new bool[p.Length])).ToList(), pad);
        using var hidden = reference.ForwardHidden(b.InputIds, b.AttentionMask).to(float32);
        var list = prompts.Select((p, i) => hidden[i, TensorIndex.Slice(0, p.Length)].detach().clone().MoveToOuterDisposeScope()).ToList();
        if (wasTraining) reference.train();
        return (list, null);
    }

    // Right-pads [T_i, H] states into [B, T, H] with a [B, T] mask.
    private static (Tensor States, Tensor Mask) Pad(IReadOnlyList<Tensor> states)
    {
        long t = states.Max(s => s.shape[0]), h = states[0].shape[1];
        var x = zeros(states.Count, t, h);
        var m = zeros(states.Count, t, dtype: int64);
        for (int i = 0; i < states.Count; i++)
        {
            long n = states[i].shape[0];
            x[i, TensorIndex.Slice(0, n)] = states[i];
            m[i, TensorIndex.Slice(0, n)] = 1;
        }
        return (x, m);
    }
}
