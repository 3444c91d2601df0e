using System.CommandLine;
using System.Text.Encodings.Web;
using System.Text.Json;
using FineAlign.Models;
using FineAlign.Text;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign tokenize</c>: the ids and vocabulary pieces of a text under a model's tokenizer — the look-inside
/// command for "why does this train on the wrong tokens". Reads only the tokenizer files (no weights needed).
/// </summary>
public static class TokenizeCommand
{
    private static readonly JsonSerializerOptions Json = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static Command Create()
    {
        var cmd = new RecipeCommand("tokenize",
            "Print the token ids and pieces of a text as the model's tokenizer encodes it (tokenizer.json, tokenizer.model or " +
            "vocab.json + merges.txt; special-token strings in the text are recognised). One line per token: position, id, " +
            "the vocabulary piece (e.g. \"Ġworld\", \"▁the\") and the text it decodes to.");
        var model = cmd.Declare<string?>("--model", null,
            "Model or tokenizer folder, a FineAlign checkpoint with a model/ subfolder, or org/name from the Hugging Face hub cache. Required.", alias: "-m");
        var text = cmd.Declare<string?>("--text", null, "The text to encode. Required.", alias: "-t");
        var addSpecial = cmd.Declare("--add-special-tokens", false,
            "Add the special tokens a sequence gets (BOS, and whatever tokenizer.json's post-processor adds), as transformers' encode() does by default.");
        var json = cmd.Declare("--json", false, "Print one JSON object {\"ids\", \"pieces\", \"special\", \"decoded\"} instead of the table.");

        cmd.SetRecipeAction((recipe, ct) =>
        {
            string dir = recipe.Get(model) ?? throw LogprobsCommand.Required("--model", "a model or tokenizer folder");
            string input = recipe.Get(text) ?? throw LogprobsCommand.Required("--text", "the text to encode");
            var tokenizer = TokenizerLoader.Load(ModelLocator.ResolveTokenizerFolder(dir));
            int[] ids = tokenizer.Encode(input, recipe.Get(addSpecial));
            if (recipe.Get(json))
            {
                recipe.Out.WriteLine(JsonSerializer.Serialize(new
                {
                    ids,
                    pieces = ids.Select(tokenizer.IdToToken).ToArray(),
                    special = ids.Select(tokenizer.IsSpecialToken).ToArray(),
                    decoded = tokenizer.Decode(ids, skipSpecialTokens: false),
                }, Json));
                return 0;
            }
            recipe.Out.WriteLine($"{ids.Length} token{(ids.Length == 1 ? "" : "s")} ({tokenizer.GetType().Name}, vocabulary {tokenizer.VocabSize})");
            int idWidth = Math.Max(2, ids.Select(i => i.ToString().Length).DefaultIfEmpty(2).Max());
            for (int i = 0; i < ids.Length; i++)
            {
                string piece = Quote(tokenizer.IdToToken(ids[i]) ?? "?");
                string decoded = Quote(tokenizer.Decode([ids[i]], skipSpecialTokens: false));
                recipe.Out.WriteLine($"{i,5}  {ids[i].ToString().PadLeft(idWidth)}  {piece,-24} {decoded}{(tokenizer.IsSpecialToken(ids[i]) ? "  (special)" : "")}");
            }
            recipe.Out.WriteLine($"ids: [{string.Join(", ", ids)}]");
            return 0;
        });
        return cmd;
    }

    // A quoted string for the terminal: quotes, backslashes and control characters escaped, everything else as is.
    private static string Quote(string s)
    {
        var sb = new System.Text.StringBuilder(s.Length + 2).Append('"');
        foreach (char c in s)
            sb.Append(c switch
            {
                '"' => "\\\"", '\\' => "\\\\", '\n' => "\\n", '\r' => "\\r", '\t' => "\\t",
                < ' ' => $"\\u{(int)c:X4}",
                _ => c.ToString(),
            });
        return sb.Append('"').ToString();
    }
}
