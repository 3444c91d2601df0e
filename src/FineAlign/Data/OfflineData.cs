using FineAlign.Data.Corpus;
using FineAlign.Text;

namespace FineAlign.Data;

/// <summary>One offline RL example as read: prompt, response and its sequence reward.</summary>
public sealed record OfflineExample(long Line, PromptCompletionExample Example, double Reward);

/// <summary>A tokenised offline example (prompt/completion split as the preference trainers do).</summary>
public sealed record EncodedOffline(long Line, EncodedSequence Sequence, double Reward);

/// <summary>
/// Reads offline RL JSONL: <c>{"prompt": "...", "completion": "...", "reward": 0.7}</c> (<c>response</c> is accepted
/// for <c>completion</c>). A missing, non-numeric or non-finite reward (NaN, Infinity, 1e999) is an error naming
/// file, line and field; with <paramref name="rewardOptional"/> (a reward source will score the responses) it may be absent.
/// </summary>
public static class OfflineReader
{
    public static IEnumerable<OfflineExample> Read(string path, bool rewardOptional = false)
    {
        foreach (var line in JsonlReader.Read(path)) yield return Parse(line, path, rewardOptional);
    }

    public static OfflineExample Parse(JsonlLine line, string file, bool rewardOptional = false)
    {
        var o = line.Object;
        string p = line.RequireString(file, "prompt");
        if (p.Length == 0) throw new DataFormatException(file, line.LineNumber, "prompt", "is empty");
        string field = o.ContainsKey("completion") || !o.ContainsKey("response") ? "completion" : "response";
        string c = line.RequireString(file, field);
        double reward = double.NaN;
        if (!o.ContainsKey("reward"))
        {
            if (!rewardOptional)
                throw new DataFormatException(file, line.LineNumber, "reward", "missing (expected a finite number, or pass --reward to score the responses)");
        }
        else reward = line.RequireFloat32(file, "reward");
        return new OfflineExample(line.LineNumber, new PromptCompletionExample(line.LineNumber, p, c), reward);
    }
}

/// <summary>A tokenised offline data set (or the built-in one).</summary>
public sealed record OfflineDataset(string Source, IReadOnlyList<EncodedOffline> Examples, EncodingReport Report)
{
    public static OfflineDataset Load(string path, TextTokenizer tokenizer, PreferenceEncoding options, bool rewardOptional = false, Action<string>? warn = null)
        => FromExamples(OfflineReader.Read(path, rewardOptional), path, tokenizer, options, warn);

    /// <summary>Tokenises; empty completions and prompts that leave no completion token are skipped and counted.</summary>
    public static OfflineDataset FromExamples(IEnumerable<OfflineExample> examples, string source, TextTokenizer tokenizer,
                                              PreferenceEncoding options, Action<string>? warn = null)
    {
        var encoder = new PreferenceEncoder(tokenizer, options);
        var report = new EncodingReport();
        var list = new List<EncodedOffline>();
        foreach (var ex in examples)
        {
            report.Read++;
            if (string.IsNullOrWhiteSpace(ex.Example.Completion))
            {
                if (report.SkippedNoSignal++ == 0) report.FirstNoSignalLine = ex.Line;
                continue;
            }
            var fit = encoder.Fit(encoder.EncodeFull(ex.Example, source), out bool truncated);
            if (fit is null)
            {
                if (report.SkippedTooLong++ == 0) report.FirstTooLongLine = ex.Line;
                continue;
            }
            if (truncated) report.Truncated++;
            list.Add(new EncodedOffline(ex.Line, fit, ex.Reward));
        }
        if (report.Read == 0) throw new FineAlignException($"{source}: no offline examples (the file is empty)");
        if (report.Summary(source, options) is string s) warn?.Invoke(s.Replace("no preference signal", "an empty completion"));
        if (list.Count == 0) throw new FineAlignException($"{source}: every example was skipped ({report.Summary(source, options)})");
        return new OfflineDataset(source, list, report);
    }

    /// <summary>A copy with new rewards (e.g. computed by a reward source), one per example; each must be finite.</summary>
    public OfflineDataset WithRewards(IReadOnlyList<double> rewards)
    {
        if (rewards.Count != Examples.Count) throw new ArgumentException($"{rewards.Count} rewards for {Examples.Count} examples");
        for (int i = 0; i < rewards.Count; i++)
            if (!double.IsFinite(rewards[i])) throw new DataFormatException(Source, Examples[i].Line, "reward", "the reward source gave NaN or Inf");
        return this with { Examples = Examples.Select((e, i) => e with { Reward = rewards[i] }).ToList() };
    }
}
