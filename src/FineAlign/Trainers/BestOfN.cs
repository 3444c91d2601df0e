using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Text;
using static TorchSharp.torch;

namespace FineAlign.Trainers;

/// <summary>The response kept for one prompt, its reward, and the rewards of the candidates it was chosen from.</summary>
public sealed record RankedResponse(string Prompt, GeneratedSequence Best, double Reward, double[] CandidateRewards)
{
    /// <summary>Every candidate, in sampling order (best-of-n only; the best of the first k is best-of-k).</summary>
    public IReadOnlyList<GeneratedSequence> Candidates { get; init; } = [];
}

/// <summary>Helpers shared by the decoding-time methods: padding responses and scoring them with a reward source.</summary>
public static class Decoding
{
    /// <summary>Right-pads token lists: ids [B, T] int64 and mask [B, T] float32 (T ≥ 1 even when all are empty).</summary>
    public static (Tensor Ids, Tensor Mask) RightPad(IReadOnlyList<int[]> rows, int padId)
    {
        int t = Math.Max(1, rows.Count == 0 ? 1 : rows.Max(r => r.Length));
        var ids = new long[rows.Count * t];
        var mask = new float[rows.Count * t];
        for (int i = 0; i < rows.Count; i++)
            for (int j = 0; j < t; j++)
            {
                bool real = j < rows[i].Length;
                ids[i * t + j] = real ? rows[i][j] : padId;
                mask[i * t + j] = real ? 1f : 0f;
            }
        return (tensor(ids, new long[] { rows.Count, t }), tensor(mask, new long[] { rows.Count, t }));
    }

    /// <summary>Σ_t r_t of each response under <paramref name="reward"/> (sequence sources: the score).</summary>
    public static double[] Score(RewardSource reward, TextTokenizer tokenizer, IReadOnlyList<string> prompts,
                                 IReadOnlyList<int[]> responses, IReadOnlyList<string> texts,
                                 IReadOnlyList<IReadOnlyDictionary<string, string>>? columns = null)
    {
        if (responses.Count == 0) return [];
        using var scope = NewDisposeScope();
        var (ids, mask) = RightPad(responses, tokenizer.PaddingId);
        using var r = reward.Compute(new RewardBatch(ids, mask, null, prompts, texts, columns));
        return r.SequenceTotals().data<float>().Select(x => (double)x).ToArray();
    }
}

/// <summary>
/// Best-of-n sampling: n samples per prompt from the model, scored by a reward source, the highest kept
/// (ties: the first). Alignment without training, and the yardstick for trained policies.
/// </summary>
public static class BestOfN
{
    /// <summary>In-process: the model's KV-cache sampler (<see cref="LocalRolloutEngine"/>), stopping at its EOS unless <paramref name="options"/> says otherwise.</summary>
    public static IReadOnlyList<RankedResponse> Generate(CausalLM model, TextTokenizer tokenizer, IReadOnlyList<string> prompts,
        RewardSource reward, int n, GenerationOptions options, int maxRows = 64) =>
        Generate(new LocalRolloutEngine(model, tokenizer), tokenizer, prompts, reward, n,
            options with { EosTokenIds = options.EosTokenIds ?? model.Config.EosTokenIds }, maxRows);

    /// <param name="columns">Each prompt's dataset columns (aligned with <paramref name="prompts"/>) for rewards that read them.</param>

    /// <summary>
    /// Through any rollout engine (in-process or a fleet of OpenAI-compatible servers): each call asks for
    /// n samples of up to <paramref name="maxRows"/> / n prompts, seeded with <see cref="GenerationOptions.Seed"/> + the
    /// chunk's first prompt index. <see cref="GenerationOptions.EosTokenIds"/> are the stop tokens sent (give the model's).
    /// </summary>
    public static IReadOnlyList<RankedResponse> Generate(IRolloutEngine engine, TextTokenizer tokenizer, IReadOnlyList<string> prompts,
        RewardSource reward, int n, GenerationOptions options, int maxRows = 64, IReadOnlyList<IReadOnlyDictionary<string, string>>? columns = null)
    {
        if (n < 1) throw new FineAlignException($"best-of-n needs n ≥ 1, got {n}");
        if (options.StopStrings is { Count: > 0 }) throw new FineAlignException("best-of-n stops at tokens only (EosTokenIds), not stop strings");
        options.Validate();
        var results = new List<RankedResponse>();
        int promptsPerCall = Math.Max(1, maxRows / n);
        for (int s = 0; s < prompts.Count; s += promptsPerCall)
        {
            var chunk = prompts.Skip(s).Take(promptsPerCall).ToList();
            var rows = chunk.SelectMany(p => Enumerable.Repeat(p, n)).ToList();
            var gen = engine.Sequences(new RolloutRequest
            {
                PromptIds = chunk.Select((p, i) => TextGenerator.EncodePrompt(tokenizer, p, s + i)).ToList(), SamplesPerPrompt = n,
                MaxNewTokens = options.MaxNewTokens, Temperature = options.IsGreedy ? 0 : options.Temperature, TopP = options.TopP, TopK = options.TopK,
                Seed = options.Seed + s, StopTokenIds = options.EosTokenIds,
            }, tokenizer);
            var scores = Decoding.Score(reward, tokenizer, rows, gen.Select(g => g.Tokens).ToList(), gen.Select(g => g.Text).ToList(),
                columns?.Skip(s).Take(chunk.Count).SelectMany(c => Enumerable.Repeat(c, n)).ToList());
            for (int i = 0; i < chunk.Count; i++)
            {
                var cand = scores.Skip(i * n).Take(n).ToArray();
                int best = Array.IndexOf(cand, cand.Max());
                results.Add(new RankedResponse(chunk[i], gen[i * n + best], cand[best], cand) { Candidates = gen.Skip(i * n).Take(n).ToList() });
            }
        }
        return results;
    }
}

/// <summary>
/// Reward-guided decoding in the spirit of DeAL (Huang et al., 2024, arXiv 2402.06147): grow each response in
/// chunks of <c>chunkTokens</c>; at every chunk sample <c>candidates</c> continuations of the current prefix,
/// score each (prefix + continuation) with the reward source, and keep the best. A candidate that ends (EOS or
/// stop string) ends the response. With candidates = 1 this is plain sampling.
/// </summary>
public static class RewardGuidedDecoding
{
    /// <param name="engine">Null: sample in-process from <paramref name="model"/> (stop strings allowed). Otherwise each
    /// chunk is one rollout request per prefix (prompt + the response so far, as token ids) with n = candidates, e.g. to
    /// a fleet of OpenAI-compatible servers; stop tokens only (<see cref="GenerationOptions.EosTokenIds"/>: give the model's).</param>
    public static IReadOnlyList<RankedResponse> Generate(CausalLM model, TextTokenizer tokenizer, IReadOnlyList<string> prompts,
        RewardSource reward, int candidates, int chunkTokens, GenerationOptions options, int maxRows = 64, IRolloutEngine? engine = null)
    {
        if (candidates < 1) throw new FineAlignException($"reward-guided decoding needs at least 1 candidate, got {candidates}");
        if (chunkTokens < 1) throw new FineAlignException($"reward-guided decoding needs a chunk of at least 1 token, got {chunkTokens}");
        if (engine is not null && options.StopStrings is { Count: > 0 })
            throw new FineAlignException("reward-guided decoding through a rollout engine stops at tokens only (EosTokenIds), not stop strings");
        options.Validate();
        var promptIds = prompts.Select((p, i) =>
        {
            var body = tokenizer.Encode(p);
            var ids = tokenizer.AddBos && tokenizer.BosId is int bos ? body.Prepend(bos).ToArray() : body;
            return ids.Length > 0 ? ids : throw new FineAlignException($"prompt {i + 1} is empty; generation needs at least one token.");
        }).ToList();
        var tokens = prompts.Select(_ => new List<int>()).ToArray();
        var logps = prompts.Select(_ => new List<float>()).ToArray();
        var reasons = new FinishReason[prompts.Count];
        var texts = new string[prompts.Count];
        var lastScores = new double[prompts.Count][];
        var done = new bool[prompts.Count];
        int promptsPerCall = Math.Max(1, maxRows / candidates);

        for (int round = 0; done.Contains(false); round++)
        {
            var active = Enumerable.Range(0, prompts.Count).Where(i => !done[i]).ToList();
            for (int s = 0; s < active.Count; s += promptsPerCall)
            {
                var chunk = active.Skip(s).Take(promptsPerCall).ToList();
                int budget = options.MaxNewTokens - chunk.Min(i => tokens[i].Count);
                var step = options with { MaxNewTokens = Math.Min(chunkTokens, budget), Seed = options.Seed + 1_000_003L * round + s };
                var gen = engine is null
                    ? TextGenerator.Generate(model, chunk.SelectMany(i => Enumerable.Repeat(promptIds[i].Concat(tokens[i]).ToArray(), candidates)).ToList(), step, tokenizer)
                    : engine.Sequences(new RolloutRequest
                    {
                        PromptIds = chunk.Select(i => promptIds[i].Concat(tokens[i]).ToArray()).ToList(), SamplesPerPrompt = candidates,
                        MaxNewTokens = step.MaxNewTokens, Temperature = step.IsGreedy ? 0 : step.Temperature, TopP = step.TopP, TopK = step.TopK,
                        Seed = step.Seed, StopTokenIds = step.EosTokenIds,
                    }, tokenizer);
                var full = gen.Select((g, k) => tokens[chunk[k / candidates]].Concat(g.Tokens).ToArray()).ToList();
                var fullTexts = full.Select(f => tokenizer.Decode(f)).ToList();
                var scores = Decoding.Score(reward, tokenizer, gen.Select((_, k) => prompts[chunk[k / candidates]]).ToList(), full, fullTexts);
                for (int j = 0; j < chunk.Count; j++)
                {
                    int i = chunk[j];
                    var cand = scores.Skip(j * candidates).Take(candidates).ToArray();
                    int best = j * candidates + Array.IndexOf(cand, cand.Max());
                    var g = gen[best];
                    int room = options.MaxNewTokens - tokens[i].Count;   // rows of one call may have used different budgets
                    var newTokens = g.Tokens.Take(room).ToArray();
                    string before = g.FinishReason == FinishReason.StopString ? tokenizer.Decode(tokens[i]) : "";
                    tokens[i].AddRange(newTokens);
                    logps[i].AddRange(g.LogProbs.Take(room));
                    lastScores[i] = cand;
                    texts[i] = g.FinishReason == FinishReason.StopString ? before + g.Text : fullTexts[best];
                    bool ended = g.FinishReason != FinishReason.Length && newTokens.Length == g.Tokens.Length;
                    if (ended || tokens[i].Count >= options.MaxNewTokens)
                    {
                        done[i] = true;
                        reasons[i] = ended ? g.FinishReason : FinishReason.Length;
                    }
                }
            }
        }
        return Enumerable.Range(0, prompts.Count).Select(i => new RankedResponse(prompts[i],
            new GeneratedSequence(promptIds[i], tokens[i].ToArray(), logps[i].ToArray(), texts[i], reasons[i]),
            lastScores[i].Max(), lastScores[i])).ToList();
    }
}
