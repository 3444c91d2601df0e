using System.Text.Json;
using System.Text.Json.Nodes;
using FineAlign.Text;

namespace FineAlign.Data;

/// <summary>The unpaired binary-feedback layouts (TRL's KTO/BCO conventions).</summary>
public enum FeedbackFormat
{
    /// <summary><c>{"prompt": "...", "completion": "...", "label": true}</c></summary>
    PromptCompletionLabel,
    /// <summary><c>{"prompt": [messages], "completion": [messages], "label": false}</c></summary>
    ConversationalPromptCompletionLabel,
    /// <summary><c>{"prompt_input_ids": [...], "completion_input_ids": [...], "label": true}</c></summary>
    Tokenized,
    /// <summary>A paired-preference file read as feedback: chosen → label true, rejected → label false
    /// (TRL's unpair_preference_dataset).</summary>
    UnpairedPreferences,
}

/// <summary>One thumbs-up (<see cref="Label"/> true) or thumbs-down example as read.</summary>
public sealed record FeedbackExample(long Line, FeedbackFormat Format, SftExample? Example, bool Label,
                                     int[]? PromptIds = null, int[]? CompletionIds = null);

/// <summary>
/// Reads binary-feedback JSONL: prompt + completion + boolean label, conversational or pre-tokenised, or a paired
/// preference file (each pair gives one desirable and one undesirable example). A label that is not a JSON boolean,
/// missing fields and mixed formats are errors naming file, line and field.
/// </summary>
public static class FeedbackReader
{
    public static IEnumerable<FeedbackExample> Read(string path)
    {
        var single = new SingleFormat<FeedbackFormat>(path, Describe);
        foreach (var line in JsonlReader.Read(path))
        {
            var o = line.Object;
            FeedbackFormat format;
            List<FeedbackExample> parsed;
            if (o.ContainsKey("chosen") || o.ContainsKey("rejected") || o.ContainsKey("chosen_input_ids"))
            {
                var pair = PreferenceReader.Parse(line, path);
                format = FeedbackFormat.UnpairedPreferences;
                parsed = pair.Format == PreferenceFormat.Tokenized
                    ? [new(line.LineNumber, format, null, true, pair.PromptIds, pair.ChosenIds), new(line.LineNumber, format, null, false, pair.PromptIds, pair.RejectedIds)]
                    : [new(line.LineNumber, format, pair.Chosen, true), new(line.LineNumber, format, pair.Rejected, false)];
            }
            else
            {
                var ex = Parse(line, path);
                format = ex.Format;
                parsed = [ex];
            }
            single.Check(format, line.LineNumber);
            foreach (var ex in parsed) yield return ex;
        }
    }

    public static string Describe(FeedbackFormat f) => f switch
    {
        FeedbackFormat.PromptCompletionLabel => "'prompt'+'completion'+'label' (strings)",
        FeedbackFormat.ConversationalPromptCompletionLabel => "'prompt'+'completion'+'label' (message lists)",
        FeedbackFormat.Tokenized => "pre-tokenised 'prompt_input_ids'+'completion_input_ids'+'label'",
        _ => "paired preferences (chosen = thumbs-up, rejected = thumbs-down)",
    };

    public static FeedbackExample Parse(JsonlLine line, string file)
    {
        var o = line.Object;
        if (!o.ContainsKey("label"))
            throw new DataFormatException(file, line.LineNumber, "label", "missing (expected a boolean: true = thumbs-up, false = thumbs-down)");
        if (o["label"] is not JsonValue lv || lv.GetValueKind() is not (JsonValueKind.True or JsonValueKind.False))
            throw new DataFormatException(file, line.LineNumber, "label",
                $"expected a boolean (true = thumbs-up, false = thumbs-down), got {JsonlReader.Kind(o["label"])} {o["label"]?.ToJsonString()}");
        bool label = lv.GetValue<bool>();
        if (o.ContainsKey("prompt_input_ids") || o.ContainsKey("completion_input_ids"))
            return new FeedbackExample(line.LineNumber, FeedbackFormat.Tokenized, null, label,
                line.RequireIntArray(file, "prompt_input_ids"), line.RequireIntArray(file, "completion_input_ids"));
        if (!o.ContainsKey("prompt")) throw JsonlReader.Wrong(line, file, "prompt", "a string or a list of messages");
        if (!o.ContainsKey("completion")) throw JsonlReader.Wrong(line, file, "completion", "a string or a list of messages");
        if (o["prompt"] is JsonArray)
        {
            var prompt = PreferenceReader.Messages(line, file, "prompt");
            if (o["completion"] is not JsonArray) throw JsonlReader.Wrong(line, file, "completion", "a list of messages (as 'prompt' is one)");
            var completion = PreferenceReader.Messages(line, file, "completion");
            return new FeedbackExample(line.LineNumber, FeedbackFormat.ConversationalPromptCompletionLabel,
                new ChatExample(line.LineNumber, [.. prompt, .. completion], prompt.Count), label);
        }
        string p = line.RequireString(file, "prompt"), c = line.RequireString(file, "completion");
        if (p.Length == 0) throw new DataFormatException(file, line.LineNumber, "prompt", "is empty");
        return new FeedbackExample(line.LineNumber, FeedbackFormat.PromptCompletionLabel, new PromptCompletionExample(line.LineNumber, p, c), label);
    }
}

/// <summary>A tokenised feedback example.</summary>
public sealed record EncodedFeedback(long Line, EncodedSequence Sequence, bool Label);

/// <summary>A tokenised feedback file (or the built-in data).</summary>
public sealed record FeedbackDataset(string Source, FeedbackFormat Format, IReadOnlyList<EncodedFeedback> Examples, EncodingReport Report)
{
    public int Desirable => Examples.Count(e => e.Label);
    public int Undesirable => Examples.Count - Desirable;

    public static FeedbackDataset Load(string path, TextTokenizer tokenizer, PreferenceEncoding options, Action<string>? warn = null)
        => FromExamples(FeedbackReader.Read(path), path, tokenizer, options, warn);

    /// <summary>Tokenises; blank completions and prompts that leave no completion token are skipped and counted.</summary>
    public static FeedbackDataset FromExamples(IEnumerable<FeedbackExample> examples, string source, TextTokenizer tokenizer,
                                               PreferenceEncoding options, Action<string>? warn = null)
    {
        var encoder = new PreferenceEncoder(tokenizer, options);
        var report = new EncodingReport();
        var list = new List<EncodedFeedback>();
        FeedbackFormat format = FeedbackFormat.PromptCompletionLabel;
        foreach (var ex in examples)
        {
            format = ex.Format;
            report.Read++;
            if (ex.Example is null)
            {
                JsonlReader.CheckTokenIds(ex.PromptIds, encoder.VocabSize, source, ex.Line, "prompt_input_ids");
                string field = ex.Format == FeedbackFormat.UnpairedPreferences ? (ex.Label ? "chosen_input_ids" : "rejected_input_ids") : "completion_input_ids";
                JsonlReader.CheckTokenIds(ex.CompletionIds, encoder.VocabSize, source, ex.Line, field);
            }
            bool blank = ex.Example is null ? ex.CompletionIds!.Length == 0 : PreferenceExample.IsBlank(ex.Example);
            if (blank)
            {
                if (report.SkippedNoSignal++ == 0) report.FirstNoSignalLine = ex.Line;
                continue;
            }
            var full = ex.Example is null
                ? new EncodedSequence(ex.PromptIds!, ex.CompletionIds!, Enumerable.Repeat(true, ex.CompletionIds!.Length).ToArray())
                : encoder.EncodeFull(ex.Example, source);
            var fit = encoder.Fit(full, out bool truncated);
            if (fit is null)
            {
                if (report.SkippedTooLong++ == 0) report.FirstTooLongLine = ex.Line;
                continue;
            }
            if (truncated) report.Truncated++;
            list.Add(new EncodedFeedback(ex.Line, fit, ex.Label));
        }
        if (report.Read == 0) throw new FineAlignException($"{source}: no feedback examples (the file is empty)");
        if (report.Summary(source, options) is string s) warn?.Invoke(s.Replace("no preference signal", "an empty completion"));
        if (list.Count == 0) throw new FineAlignException($"{source}: every example was skipped ({report.Summary(source, options)})");
        return new FeedbackDataset(source, format, list, report);
    }
}
