using System.Text.Json;

namespace FineAlign.Text.Pipeline;

/// <summary>A tokenizer.json <c>post_processor</c>: adds the special tokens around an encoded sequence (single sequences only).</summary>
internal abstract class PostProcessor
{
    public abstract int[] Process(int[] ids);

    /// <summary>The ids put before the sequence (BOS), for FineAlign's BosId/AddBos contract.</summary>
    public virtual int[] Prefix => [];

    public static PostProcessor Parse(JsonFields f, Func<string, int?> tokenId)
    {
        string type = f.Type;
        switch (type)
        {
            case "ByteLevel": return new Nothing();  // only adjusts offsets
            case "TemplateProcessing": return Template.Read(f, tokenId);
            case "BertProcessing":
            case "RobertaProcessing":
                return new Template([Pair(f, "cls"), null, Pair(f, "sep")]);
            case "Sequence":
                var items = new List<PostProcessor>();
                int i = 0;
                foreach (var e in f.Array("processors").EnumerateArray())
                    items.Add(Parse(new JsonFields(f.File, f.Path($"processors[{i++}]"), e), tokenId));
                return new Sequence(items);
            default:
                throw f.Fail($"unknown post-processor type '{type}' (supported: TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence)");
        }
    }

    // "cls": ["[CLS]", 101]
    private static int[] Pair(JsonFields f, string field)
    {
        var v = f.Get(field) ?? throw f.Fail(field, "missing (expected [token, id])");
        if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() != 2 || v[1].ValueKind != JsonValueKind.Number || !v[1].TryGetInt32(out int id))
            throw f.Fail(field, $"expected [token, id], got {v.GetRawText()}");
        return [id];
    }

    private sealed class Nothing : PostProcessor
    {
        public override int[] Process(int[] ids) => ids;
    }

    /// <summary>TemplateProcessing's <c>single</c> template: special-token pieces (their ids) and the sequence <c>$A</c>.</summary>
    /// <summary>Items in order: a special token's ids, or null for the sequence itself.</summary>
    private sealed class Template(List<int[]?> items) : PostProcessor
    {
        // A SpecialToken missing from special_tokens (tokenizers refuses such a file) is looked up in the vocabulary.
        public static Template Read(JsonFields f, Func<string, int?> tokenId)
        {
            var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
            if (f.Get("special_tokens") is { } st)
            {
                if (st.ValueKind != JsonValueKind.Object) throw f.Fail("special_tokens", $"expected an object, got {JsonFields.Kind(st)}");
                foreach (var p in st.EnumerateObject())
                {
                    var tok = new JsonFields(f.File, f.Path($"special_tokens[\"{p.Name}\"]"), p.Value);
                    var ids = tok.Array("ids").EnumerateArray()
                        .Select(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int i) ? i : throw tok.Fail("ids", $"expected integers, got {e.GetRawText()}"))
                        .ToArray();
                    specials[tok.OptString("id") ?? p.Name] = ids;
                }
            }
            var list = new List<int[]?>();
            int k = 0;
            foreach (var e in f.Array("single").EnumerateArray())
            {
                var item = new JsonFields(f.File, f.Path($"single[{k++}]"), e);
                if (item.Get("SpecialToken") is not null)
                {
                    string id = item.Child("SpecialToken").String("id");
                    list.Add(specials.TryGetValue(id, out var ids) ? ids
                        : tokenId(id) is int known ? [known]
                        : throw item.Fail($"special token '{id}' is neither listed in special_tokens nor a known token"));
                }
                else if (item.Get("Sequence") is not null)
                {
                    string which = item.Child("Sequence").String("id");
                    if (which != "A") throw item.Fail($"a single-sequence template refers to sequence '{which}'");
                    list.Add(null);
                }
                else throw item.Fail("expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
            }
            return new Template(list);
        }

        public override int[] Process(int[] ids)
        {
            var result = new List<int>(ids.Length + 4);
            foreach (var special in items) result.AddRange(special ?? ids);
            return result.ToArray();
        }

        public override int[] Prefix => items.TakeWhile(i => i is not null).SelectMany(i => i!).ToArray();
    }

    private sealed class Sequence(List<PostProcessor> items) : PostProcessor
    {
        public override int[] Process(int[] ids)
        {
            foreach (var p in items) ids = p.Process(ids);
            return ids;
        }

        public override int[] Prefix => items.Select(i => i.Prefix).FirstOrDefault(p => p.Length > 0) ?? [];
    }
}
