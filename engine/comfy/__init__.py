"""ComfyUI workflows in Kiln: read (UI format, API format, PNG chunks) and written back.

`engine.comfy.workflow.convert` turns a parsed ComfyUI document into a Kiln Graph (.importer);
engine.graph_file calls it for a .json or .png that is a ComfyUI file. `export` writes a Kiln
graph in either ComfyUI format (engine.comfy.exporter). The node-type table is engine.comfy.tables.
No Qt, no torch.
"""
