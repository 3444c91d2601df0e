using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using FineAlign.Data;
using FineAlign.Text;
using FineAlign.Text.Jinja;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign template</c>: what SFT will train on, example by example — the rendered chat text with the trained
/// (assistant) tokens marked, and the ids. The command users reach for when masks look wrong.
/// </summary>
public static class TemplateCommand
{
    /// <summary>Marks around trained text in the readable output.</summary>
    public const string Open = "⟦", Close = "⟧";
    private static readonly System.Text.Json.JsonSerializerOptions Relaxed = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("template",
            "Show how SFT data is rendered and masked: for each example of --data (messages, prompt/completion as text or message " +
            "lists, or text), the text the chat template renders with the trained tokens between ⟦ and ⟧, then the token ids " +
            "(trained ones marked the same way). --json prints one JSON line per example instead (text, input_ids, loss_mask, trained).");
        var model = cmd.Declare<string?>("--model", null, "Model folder with tokenizer files (a FineAlign checkpoint's model/ subfolder is found too). Required.", alias: "-m");
        var data = cmd.Declare<string?>("--data", null, "SFT JSONL file. Required.", alias: "-d");
        var chatTemplate = cmd.Declare<string?>("--chat-template", null, GenerateCommand.ChatTemplateHelp);
        var kwargs = cmd.Declare<string?>("--chat-template-kwargs", null, "JSON object of extra template variables, e.g. '{\"enable_thinking\": false}' (transformers' apply_chat_template kwargs).");
        var completionOnly = cmd.Declare("--completion-only-loss", true, "As in sft: train on assistant/completion tokens only (false: every token but the first).");
        var limit = cmd.Declare("--limit", 0, "Show only the first N examples (0 = all).", check: v => v >= 0 ? null : "must be ≥ 0");
        var json = cmd.Declare("--json", false, "One JSON line per example instead of the readable view.");

        cmd.SetRecipeAction((r, ct) =>
        {
            string dir = r.Get(model) ?? throw LogprobsCommand.Required("--model", "a model folder");
            string path = r.Get(data) ?? throw LogprobsCommand.Required("--data", "an SFT JSONL file");
            if (!File.Exists(path))
                throw new FineAlignException(Directory.Exists(path) ? $"{path}: is a folder, expected a JSONL file" : $"{path}: file not found");
            string folder = TokenizerFolder(dir);
            var tokenizer = TokenizerLoader.Load(folder);
            var encoder = new SftEncoder(tokenizer, new SftOptions
            {
                ChatTemplate = r.Get(chatTemplate), TemplateFolder = folder, CompletionOnlyLoss = r.Get(completionOnly),
                ChatTemplateKwargs = ParseKwargs(r.Get(kwargs)), MaxLength = int.MaxValue,
            });
            bool header = false;
            int shown = 0;
            foreach (var ex in SftReader.Read(path))
            {
                ct.ThrowIfCancellationRequested();
                if (r.Get(limit) > 0 && shown >= r.Get(limit)) break;
                var t = encoder.EncodeFull(ex, path);
                shown++;
                if (r.Get(json)) { r.Out.WriteLine(Json(ex, t, tokenizer).ToJsonString(Relaxed)); continue; }
                if (!header && ex is ChatExample)
                {
                    var chat = encoder.Chat;
                    var (eot, eotId) = chat.EndOfTurn;
                    r.Out.WriteLine($"template: {chat.Source}; trained spans from {(chat.HasGenerationBlocks ? "its {% generation %} blocks" : "rendering message prefixes")}" +
                                    (eot is null ? "" : $"; end of turn {eot}" + (eotId is int id ? $" (id {id})" : "")));
                    header = true;
                }
                int trained = t.LossMask.Count(m => m);
                r.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"### example {shown} (line {ex.Line}, {SftReader.Describe(ex.Format)}): {t.Length} tokens, {trained} trained"));
                r.Out.WriteLine(Marked(tokenizer, t));
                r.Out.WriteLine("ids: " + string.Join(" ", Runs(t).Select(run => run.Trained
                    ? Open + string.Join(" ", run.Ids) + Close : string.Join(" ", run.Ids))));
                r.Out.WriteLine();
            }
            if (shown == 0) throw new FineAlignException($"{path}: no examples (the file is empty)");
            return 0;
        });
        return cmd;
    }

    /// <summary>The folder itself when it has tokenizer files, else its model/ subfolder (a FineAlign checkpoint).</summary>
    private static string TokenizerFolder(string dir)
    {
        if (File.Exists(dir)) throw new FineAlignException($"{dir}: is a file; --model expects a folder with tokenizer files");
        if (!Directory.Exists(dir)) throw new FineAlignException($"{dir}: model folder not found");
        bool Has(string d) => File.Exists(Path.Combine(d, "tokenizer.json")) || File.Exists(Path.Combine(d, "tokenizer_config.json")) ||
                              File.Exists(Path.Combine(d, "tokenizer.model")) || File.Exists(Path.Combine(d, "vocab.json"));
        if (Has(dir)) return dir;
        string inner = Path.Combine(dir, "model");
        if (Has(inner)) return inner;
        throw new FineAlignException($"{dir}: no tokenizer files (tokenizer.json, tokenizer_config.json, tokenizer.model or vocab.json)");
    }

    internal static IReadOnlyDictionary<string, object?>? ParseKwargs(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return null;
        JsonNode? node;
        try { node = JsonNode.Parse(text); }
        catch (System.Text.Json.JsonException e) { throw new UsageException($"--chat-template-kwargs: invalid JSON: {e.Message.ReplaceLineEndings(" ")}"); }
        if (node is not JsonObject o) throw new UsageException("--chat-template-kwargs: expected a JSON object such as {\"enable_thinking\": false}");
        return o.ToDictionary(kv => kv.Key, kv => JinjaValues.FromJson(kv.Value));
    }

    private static List<(bool Trained, List<int> Ids)> Runs(TokenizedExample t)
    {
        var runs = new List<(bool, List<int>)>();
        for (int i = 0; i < t.Length; i++)
        {
            if (runs.Count == 0 || runs[^1].Item1 != t.LossMask[i]) runs.Add((t.LossMask[i], new List<int>()));
            runs[^1].Item2.Add(t.InputIds[i]);
        }
        return runs;
    }

    /// <summary>The decoded sequence (special tokens kept) with trained runs between the marks.</summary>
    public static string Marked(TextTokenizer tokenizer, TokenizedExample t)
    {
        var sb = new StringBuilder();
        foreach (var (trained, ids) in Runs(t))
        {
            string text = tokenizer.Decode(ids, skipSpecialTokens: false);
            sb.Append(trained ? Open + text + Close : text);
        }
        return sb.ToString();
    }

    private static JsonObject Json(SftExample ex, TokenizedExample t, TextTokenizer tok) => new()
    {
        ["line"] = ex.Line,
        ["format"] = ex.Format.ToString(),
        ["text"] = tok.Decode(t.InputIds, skipSpecialTokens: false),
        ["input_ids"] = new JsonArray(t.InputIds.Select(i => (JsonNode)i).ToArray()),
        ["loss_mask"] = new JsonArray(t.LossMask.Select(m => (JsonNode)(m ? 1 : 0)).ToArray()),
        ["trained"] = new JsonArray(Runs(t).Where(x => x.Trained).Select(x => (JsonNode)tok.Decode(x.Ids, skipSpecialTokens: false)).ToArray()),
    };
}
